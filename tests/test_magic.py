"""%spark_appliance and the widgets in a real IPython kernel beside a real Jupyter server."""

from __future__ import annotations

import json
import re

import pytest

from jupyter_spark_appliance.spark.ports import allocate_port
from jupyter_spark_appliance.spark.standalone import alive_workers

from kernels import run_kernel_process

pytestmark = pytest.mark.spark


@pytest.fixture
def kernel_env(jp_serverapp, jp_base_url):
    url = f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}"
    return {"JUPYTER_SPARK_APPLIANCE_URL": url, "JUPYTER_SPARK_APPLIANCE_TOKEN": jp_serverapp.identity_provider.token}


async def test_magic_up_scale_widget_down(api, kernel_env, jp_base_url):
    out = await run_kernel_process("python3", [
        "%load_ext jupyter_spark_appliance",
        "%spark_appliance up --workers 1",
        "%spark_appliance scale 2",
        "%spark_appliance session --name mine\nprint('RESULT', mine.range(1, 11).selectExpr('sum(id)').first()[0])\n"
        "mine.stop()",
        "print('expands to', len(spark_appliance_livy_password))",
    ], env=kernel_env)
    assert "spark-master:running" in out[1] and "%spark add -s spark_livy -l python -u http://127.0.0.1:" in out[1]
    # The login is printed as a variable IPython expands in line magics, never the password itself.
    assert "-a jsa -p $spark_appliance_livy_password -t Basic_Access" in out[1], out[1]
    _, creds = await api.call("GET", "appliance/spark-livy/credentials")
    assert creds["livy"]["password"] and creds["livy"]["password"] not in "".join(out)
    assert f"expands to {len(creds['livy']['password'])}" in out[4]
    # `session` gives a PySpark session of the kernel on the (authenticated) master in one step.
    assert "`mine` is a SparkSession on spark://127.0.0.1:" in out[3] and "RESULT 55" in out[3], out[3]
    assert "[widget]" in out[1]
    assert "spark-worker" in out[2] and "2/2" in out[2]
    code, model = await api.call("GET", "appliance/spark-livy")
    assert model["state"] == "running" and alive_workers(model["links"]["spark-ui"]) == 2

    # The widget's slider scales; its Stop button stops everything.
    out = await run_kernel_process("python3", [
        "from jupyter_spark_appliance.client import ApplianceClient\n"
        "from jupyter_spark_appliance.widgets import ApplianceView\n"
        "view = ApplianceView(ApplianceClient(), 'spark-livy')\n"
        "print('slider', view.slider.value)\n"
        "import re; links = set(re.findall(r'href=\"([^\"]+)\"', view.html.value))\n"
        "print('LINKS', sorted(u for u in links if '/proxy/app-' not in u))\n"
        "print('APPLINKS', sorted(re.sub('app-[0-9-]+', 'APP', u) for u in links if '/proxy/app-' in u))\n"
        "print('CONNECT', re.findall(r'<code>(sc://[^<]+)</code>', view.html.value))\n"
        "print('APPS', sorted(re.findall(r\"data-app-id='([^']+)'\", view.html.value)) != [])\n"
        "view.slider.value = 1\n"
        "m = view.client.wait('spark-livy')\n"
        "print('workers', [c['instances'] for c in m['containers'] if c['id'] == 'spark-worker'])",
    ], env=kernel_env)
    assert "slider 2" in out[0] and "workers [1]" in out[0], out[0]
    # The widget's links go through the Jupyter server (its base URL, its auth), never to 127.0.0.1 ports.
    root = f"{jp_base_url}spark-appliance/appliance/spark-livy/"
    links = sorted({root + "sparkui/", root + "livy/", root + "workerui/0/", root + "workerui/1/"})
    assert f"LINKS {links}" in out[0], out[0]
    assert f"CONNECT ['{model['links']['connect']}']" in out[0] and "APPS True" in out[0], out[0]
    # Its running applications (the gateway's driver, the Connect server) link to their UIs through the master.
    assert f"APPLINKS {[root + 'sparkui/proxy/APP/'] * 2}" in out[0], out[0]
    code, model = await api.call("GET", "appliance/spark-livy")
    assert alive_workers(model["links"]["spark-ui"]) == 1

    out = await run_kernel_process("python3", ["%load_ext jupyter_spark_appliance", "%spark_appliance down"],
                                   env=kernel_env)
    assert "spark-livy stopped and removed" in out[1]
    assert (await api.call("GET", "appliance/spark-livy"))[0] == 404


async def test_magic_errors_are_clear(api, kernel_env, monkeypatch, tmp_path):
    # The server (in this process) has no Docker engine: a socket nobody listens on.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    out = await run_kernel_process("python3", [
        "%load_ext jupyter_spark_appliance",
        "%spark_appliance fly",
        "%spark_appliance scale many",
        "%%spark_appliance up\n{\"id\": \"x\", \"containers\": [",
        "%%spark_appliance up\n{\"id\": \"x\", \"containers\": []}",
        "%spark_appliance status --id nothing-here",
        "%spark_appliance up --backend swarm --workers 1",
        "%spark_appliance up --backend docker --workers 1",
    ], env=kernel_env)
    assert "UsageError" in out[1] and "%spark_appliance up [--workers N]" in out[1] and "Traceback" not in out[1]
    assert "UsageError" in out[2] and "invalid int value" in out[2]
    assert "not a valid appliance" in out[3] and "(line 2, column 1)" in out[3]
    assert "containers: must list at least one container" in out[4]
    assert "Error: no appliance with id 'nothing-here'" in out[5]
    # `up --backend B` reaches the server: each backend answers with its own reason (a 503), nothing starts.
    unreachable = "Error: the Docker engine is not reachable ("
    swarm = "The swarm backend needs an engine that is a swarm manager (docker swarm init), or use the local backend"
    assert out[6].startswith(unreachable) and out[6].rstrip().endswith(swarm), out[6]
    docker = "Install and start it (apt-get install docker.io; dockerd), or use the local backend"
    assert out[7].startswith(unreachable) and out[7].rstrip().endswith(docker), out[7]
    assert (await api.call("GET", "appliance"))[1] == {"appliances": []}
    assert not any("ERROR" in o for o in out), out

    closed = f"http://127.0.0.1:{allocate_port('127.0.0.1')}/"
    out = await run_kernel_process("python3", ["%load_ext jupyter_spark_appliance", "%spark_appliance status"],
                                   env={"JUPYTER_SPARK_APPLIANCE_URL": closed})
    assert "is not reachable" in out[1] and "ERROR" not in out[1]


async def test_kernel_finds_the_server_through_its_runtime_files(api, jp_serverapp):
    # No URL/token overrides: the client reads Jupyter's running-server files.
    out = await run_kernel_process("python3", [
        "import os; [os.environ.pop(k, None) for k in"
        " ('JUPYTER_SPARK_APPLIANCE_URL', 'JUPYTER_SPARK_APPLIANCE_TOKEN')]",
        "from jupyter_spark_appliance.client import ApplianceClient\n"
        "c = ApplianceClient(); print('BASE', c.base); print('LIST', c.list())",
    ], env={"JUPYTER_RUNTIME_DIR": jp_serverapp.runtime_dir})
    assert f":{jp_serverapp.port}/" in out[1] and "LIST []" in out[1], out


async def test_widget_stop_button_stops_the_appliance(api, kernel_env):
    assert (await api.call("POST", "appliance", {"id": "wstop", "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080}, {"container_port": 7077}]}]}))[0] == 201
    assert (await api.wait_state("wstop", {"running", "failed"}))["state"] == "running"
    out = await run_kernel_process("python3", [
        "from jupyter_spark_appliance.client import ApplianceClient\n"
        "from jupyter_spark_appliance.widgets import ApplianceView\n"
        "view = ApplianceView(ApplianceClient(), 'wstop')\n"
        "print('BEFORE', 'running' in view.html.value, view.slider.layout.display)\n"
        "view.stop_button.click()\n"
        "print('AFTER', view.message.value, '|', view.html.value)",
    ], env=kernel_env)
    assert "BEFORE True none" in out[0], out  # no worker container: no slider
    assert "AFTER stopped | <b>wstop</b>: stopped" in out[0], out
    assert (await api.call("GET", "appliance/wstop"))[0] == 404


async def test_cell_magic_launches_the_cells_appliance(api, kernel_env):
    spec = json.dumps({"id": "from-cell", "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080, "name": "spark-ui"}, {"container_port": 7077}]}]}, indent=1)
    out = await run_kernel_process("python3", [
        "%load_ext jupyter_spark_appliance",
        f"%%spark_appliance up\n{spec}",
        "%spark_appliance endpoints",
        "%spark_appliance logs spark-master --tail 3",
        "%spark_appliance logs spark-master --tail 200",
        "%spark_appliance down",
    ], env=kernel_env)
    assert "spark-master:running" in out[1], out[1]
    assert "spark-master[0] spark-ui 127.0.0.1:" in out[2] and "(container port 8080/tcp) http://127.0.0.1:" in out[2]
    # `logs`: the magic's header, then the master JVM's own lines: the last N of them with --tail N.
    short, long = ([line for line in text.splitlines() if line.strip()] for text in out[3:5])
    assert short[0] == long[0] == "==> spark-master-0 (running) <==", out[3:5]
    assert len(short) - 1 == 3 < len(long) - 1, out[3:5]  # the log has more than 3 lines: --tail 3 gives 3
    assert any(long[i:i + 3] == short[1:] for i in range(1, len(long) - 2)), out[3:5]  # ... the last 3, read first
    rpc = re.search(r"spark-master\[0\] \S* ?127\.0\.0\.1:(\d+) \(container port 7077/tcp\)", out[2])
    assert rpc, out[2]
    assert any(f"Starting Spark master at spark://127.0.0.1:{rpc.group(1)}" in line for line in long), out[4]
    assert any("I have been elected leader! New state: ALIVE" in line for line in long), out[4]
    # The UI's endpoint is where the JVM says its MasterUI started, and its link names the same port.
    ui = re.search(r"spark-master\[0\] spark-ui 127\.0\.0\.1:(\d+) \(container port 8080/tcp\) "
                   r"http://127\.0\.0\.1:(\d+)", out[2])
    assert ui and ui.group(1) == ui.group(2), out[2]
    assert any(f"Successfully started service 'MasterUI' on port {ui.group(1)}." in line for line in long), out[4]
    assert "from-cell stopped and removed" in out[5]
    assert (await api.call("GET", "appliance/from-cell"))[0] == 404
