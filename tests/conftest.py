"""Fixtures: a real Jupyter server (pytest-jupyter) with the extension enabled.

Every test gets its own data dir and its own Sparkmagic config dir, so nothing
here reads or writes the developer's ~/.sparkmagic or appliance records.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_spark_appliance.spark.cds import FAST_DAEMON_JAVA_OPTS

pytest_plugins = ("pytest_jupyter.jupyter_server",)

#: Every local JVM of the suite (masters, workers, drivers, executors, the recording's) runs
#: with C1 only and the serial collector, the project's daemons' own options. A test's
#: statements are short, so the default C2 compiler and G1's threads would spend the two
#: cores on compiling code that has finished by then (test_livy_gateway.py: 246 CPU-seconds
#: with the defaults, 180 with these, 11 passed both ways). Only the JIT and the collector
#: change, nothing a test observes; the project keeps the JVM's defaults for drivers and
#: executors (a user's long job wants C2), and the Docker tests run them so, in containers.
#: JAVA_TOOL_OPTIONS passes the allow-list of child_env.py; a developer's own value is kept.
os.environ.setdefault("JAVA_TOOL_OPTIONS", FAST_DAEMON_JAVA_OPTS)


#: The longest test modules (CI's --durations), started first: the README's command runs
#: them on two pytest-xdist workers (``--dist loadscope``: a module, or a class, stays on one
#: worker with its fixtures), and the longest started last would leave one worker idle at
#: the end. Only the order changes; a module missing here runs after these, in file order.
SLOW_FIRST = (  # seconds per module in a run of the whole suite on 2 cores (--durations=0)
    "browser/test_panel.py",  # 325
    "test_swarm_backend.py",  # 297
    "test_livy_gateway.py",  # 102
    "test_docker_backend.py",  # 97
    "test_livy_capacity.py",  # 90
    "test_launch_local.py",  # 86
    "test_livy_security.py",  # 83
    "test_self_healing.py",  # 81
    "test_livy_scala.py",  # 69
    "test_magic.py",  # 65
    "test_short_of_resources.py",  # 64
    "test_sparkmagic_notebook.py",  # 51
    "test_claims_gateway.py",  # 49
    "test_livy_batches.py",  # 48
    "test_proxy.py",  # 41
    "test_api_fuzz.py",  # 34
    "test_claims_docker.py",  # 32
    "test_security.py",  # 31
    "test_server_process.py",  # 29
    "test_sparkmagic_kernel.py",  # 28
    "test_connect.py",  # 27
    "test_livy_fuzz.py",  # 26
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(Path(__file__).parent).as_posix(), len(rank)))


@pytest.fixture(scope="session")
def docker_engine():
    """A real Docker engine with the project's images (.ci/docker-setup builds them).

    Skips where there is none, unless JSA_REQUIRE_DOCKER=1 (CI), where it must be.
    """
    try:
        import docker

        from jupyter_spark_appliance.templates import DEFAULT_IMAGES

        client = docker.from_env()
        client.ping()
        for image in DEFAULT_IMAGES.values():
            client.images.get(image)
    except Exception as e:  # noqa: BLE001
        if os.environ.get("JSA_REQUIRE_DOCKER") == "1":
            raise
        pytest.skip(f"no Docker engine with the project's images here ({e}); see .ci/docker-setup")
    yield client
    client.close()


@pytest.fixture(scope="session")
def shared_cds_dir(tmp_path_factory) -> Path:
    """Class-data-sharing archives recorded once for the whole run, by whichever pytest-xdist worker asks first.

    Each test's server has its own data dir, and the archives' default home is next to
    it: every server would record them again in the background (four throwaway JVMs for
    about a minute), on the same two cores as the test's own JVMs, which then start
    without archives. Recorded here once, the way the server does it, and shared: the
    workers' temporary dirs have one parent, and a lock there makes the others wait for
    the first one's recording instead of making their own.
    """
    from jupyter_spark_appliance.spark.cds import ClassDataSharing
    from jupyter_spark_appliance.spark.cds_recording import record_archives
    from jupyter_spark_appliance.spark.home import SparkNotFound, find_spark_home

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cds_dir = root / "shared-cds"
    cds_dir.mkdir(exist_ok=True)
    try:
        spark_home = find_spark_home("")
    except SparkNotFound:
        return cds_dir
    with open(root / "shared-cds.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        if (cds_dir / "done").exists():
            return cds_dir
        recorded: list[str] | str = []
        try:
            recorded = record_archives(ClassDataSharing(cds_dir), spark_home, FAST_DAEMON_JAVA_OPTS,
                                       cds_dir / "recording", sys.executable, background=False)
        except Exception as e:  # noqa: BLE001 - an optimisation: servers record their own then
            print(f"could not record the shared class-data-sharing archives: {e}", file=sys.stderr)
            recorded = f"{type(e).__name__}: {e}"
        # What record_archives returned (or why it failed), for the recording's own test.
        (cds_dir / "done").write_text(json.dumps(recorded))
    return cds_dir


@pytest.fixture(autouse=True)
def server_config_file(request, jp_config_dir, tmp_path):
    """Every in-process server of a test reads the shared archives' dir from its config file.

    A config file rather than ``jp_server_config``, which test modules override. A test
    marked ``own_cds`` (the recording's own test) keeps the default: a dir of its own.
    A test that starts no local JVM (neither ``spark`` nor ``browser``: API errors, the
    Docker and Swarm backends) needs no archive, so it does not wait for the run's
    recording (about a minute, at the start, on whichever worker asks first), and its
    server records none: an empty dir of its own and ``prepare_cds`` off.
    """
    if "jp_serverapp" not in request.fixturenames or request.node.get_closest_marker("own_cds"):
        return
    if not (request.node.get_closest_marker("spark") or request.node.get_closest_marker("browser")):
        settings = {"cds_dir": str(tmp_path / "no-cds"), "prepare_cds": False}
    else:
        settings = {"cds_dir": str(request.getfixturevalue("shared_cds_dir"))}
    (jp_config_dir / "jupyter_server_config.json").write_text(json.dumps({"SparkApplianceApp": settings}))


@pytest.fixture(autouse=True)
def sparkmagic_conf_dir(tmp_path, monkeypatch):
    conf = tmp_path / "sparkmagic"
    conf.mkdir()
    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(conf))
    monkeypatch.delenv("SPARKMAGIC_CONF_FILE", raising=False)
    return conf


@pytest.fixture
def appliance_data_dir(tmp_path):
    return tmp_path / "appliances"


@pytest.fixture
def jp_server_config(appliance_data_dir):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_spark_appliance": True}},
        "SparkApplianceApp": {"data_dir": str(appliance_data_dir), "start_timeout": 240.0},
    }


class Api:
    """A thin JSON client over pytest-jupyter's jp_fetch (real HTTP, real auth)."""

    def __init__(self, jp_fetch):
        self.fetch = jp_fetch

    async def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                   headers: dict[str, str] | None = None, **params: Any) -> tuple[int, Any]:
        # A DELETE stops every JVM of an appliance (each with a grace period): on 2 busy
        # cores that can take longer than tornado's default 20 s.
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "request_timeout": 180}
        if headers is not None:
            kwargs["headers"] = headers
        if raw is not None:
            kwargs["body"] = raw
        elif body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in ("POST", "PATCH"):
            kwargs["body"] = b""
        if params:
            kwargs["params"] = params
        response = await self.fetch("spark-appliance", *path.strip("/").split("/"), **kwargs)
        text = response.body.decode() if response.body else ""
        try:
            return response.code, json.loads(text) if text else None
        except ValueError:
            return response.code, text

    async def wait_state(self, app_id: str, states: set[str], timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        model: Any = None
        while time.monotonic() < deadline:
            code, model = await self.call("GET", f"appliance/{app_id}")
            assert code == 200, model
            if model["state"] in states:
                return model
            await asyncio.sleep(0.5)
        raise AssertionError(f"{app_id} did not reach {states}: {json.dumps(model, indent=1)[:3000]}")


@pytest.fixture
def api(jp_fetch, jp_serverapp):
    return Api(jp_fetch)


def sparkmagic_endpoint(credentials: dict[str, Any]) -> Any:
    """Sparkmagic's own Endpoint with Basic auth, from GET appliance/{id}/credentials (as %spark add builds it)."""
    from argparse import Namespace

    from sparkmagic.auth.basic import Basic
    from sparkmagic.livyclientlib.endpoint import Endpoint

    livy = credentials["livy"]
    return Endpoint(livy["url"], Basic(Namespace(url=livy["url"], user=livy["username"], password=livy["password"])))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs (root only, as in CI; elsewhere it skips): its writes fail with ENOSPC for real."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
