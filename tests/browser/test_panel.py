"""The JupyterLab panel in a real JupyterLab, driven in headless Chromium (Playwright).

As a user would: open the panel, launch a cluster with one worker on the local
backend, watch it run, slide to two workers, stop it; a bad form value shows
the server's message. Screenshots land in test-results/ (docs/ keeps copies).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import requests

from jupyter_spark_appliance.spark.ports import allocate_port

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RESULTS = Path(__file__).resolve().parents[2] / "test-results"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("JSA_REQUIRE_BROWSER") == "1":
            raise RuntimeError("chromium is missing (apt-get install chromium)")
        pytest.skip("no chromium here (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("lab")
    config = tmp / "config"
    config.mkdir()
    for name in ("jupyter_server_config.py", "jupyter_lab_config.py"):
        (config / name).write_text(
            "c.LabApp.news_url = None\nc.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'\n"
            "c.LabApp.expose_app_in_browser = True\n"
            # Streams end every 4 s, so the panel's reconnection runs many times in these tests.
            "c.SparkApplianceApp.event_stream_seconds = 4\n")
    token, port = secrets.token_hex(12), allocate_port("127.0.0.1")
    data = tmp / "data"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(data),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "SPARKMAGIC_CONF_DIR": str(tmp / "sparkmagic")}
    log = open(tmp / "lab.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
                             f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}"],
                            env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/api/status", headers={"Authorization": f"token {token}"}, timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError((tmp / "lab.log").read_text()[-3000:])
    yield {"base": base, "token": token, "data": data}
    proc.terminate()
    proc.wait(60)


@pytest.fixture
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{lab['base']}/lab?token={lab['token']}")
        page.locator('[data-id="jp-spark-appliance-sidebar"]').wait_for(timeout=60_000)
        # Activate rather than click: a click toggles, and the layout is restored between tests.
        page.evaluate("window.jupyterapp.shell.activateById('jp-spark-appliance-sidebar')")
        news = page.locator(".jp-toast-button", has_text="No")  # JupyterLab's news question, if asked
        try:
            news.click(timeout=3_000)
        except Exception:  # noqa: BLE001 - not asked: nothing to dismiss
            pass
        page.locator(".jp-SparkAppliance-launch").wait_for(timeout=30_000)
        yield page
        browser.close()


def rest(lab, path: str) -> dict:
    r = requests.get(f"{lab['base']}/spark-appliance/{path}", headers={"Authorization": f"token {lab['token']}"})
    r.raise_for_status()
    return r.json()


def shot(page, name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / name))


def test_launch_watch_scale_stop(lab, page):
    page.locator(".jp-SparkAppliance-launch").click()
    form = page.locator(".jp-SparkAppliance-form")
    form.locator('select[name="backend"]').select_option("local")
    form.locator('input[name="workers"]').fill("1")
    form.locator('button[type="submit"]').click()

    card = page.locator('.jp-SparkAppliance-card[data-appliance-id="spark-livy"]')
    card.wait_for(timeout=30_000)
    page.locator('.jp-SparkAppliance-card[data-state="running"]').wait_for(timeout=240_000)
    for cid in ("spark-master", "spark-worker", "livy"):
        row = card.locator(f'.jp-SparkAppliance-container[data-container-id="{cid}"]')
        assert row.get_attribute("data-state") == "running"
    assert card.locator("a.jp-SparkAppliance-link", has_text="Spark UI").count() == 1
    assert card.locator("a.jp-SparkAppliance-link", has_text="Livy").count() == 1
    page.locator(".jp-SparkAppliance-sparkmagicUrl", has_text="Sparkmagic → http://127.0.0.1:").wait_for()
    page.locator(".jp-SparkAppliance-graph svg").wait_for()
    shot(page, "panel-running.png")

    # Slide to 2 workers: scales on release, then both show running.
    card.locator(".jp-SparkAppliance-slider").fill("2")
    worker = card.locator('.jp-SparkAppliance-container[data-container-id="spark-worker"]')
    page.wait_for_function(
        """() => { const w = document.querySelector(
                     '[data-appliance-id="spark-livy"] [data-container-id="spark-worker"]');
                   return w && w.dataset.state === 'running' && w.textContent.includes('2/2'); }""",
        timeout=240_000)
    model = rest(lab, "appliance/spark-livy")
    workers = next(c for c in model["containers"] if c["id"] == "spark-worker")
    assert [i["state"] for i in workers["instance_states"]] == ["running", "running"]
    with urllib.request.urlopen(model["links"]["spark-ui"] + "/json/", timeout=5) as r:
        assert sum(w["state"] == "ALIVE" for w in json.load(r)["workers"]) == 2
    assert worker.get_attribute("data-state") == "running"

    # Logs of a container.
    worker.locator(".jp-SparkAppliance-logsButton").click()
    page.locator(".jp-SparkAppliance-logs", has_text="spark-worker-0").wait_for()
    shot(page, "panel-two-workers.png")
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=30_000)
    shot(page, "panel-dark.png")

    # Stop, with the confirmation: the card goes and no process remains.
    card.locator(".jp-SparkAppliance-stop").click()
    page.locator(".jp-Dialog button.jp-mod-warn").click()
    card.wait_for(state="detached", timeout=120_000)
    assert rest(lab, "appliance") == {"appliances": []}
    leftovers = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if str(proc.info["cwd"] or "").startswith(str(lab["data"])):
                leftovers.append(proc.info["cmdline"])
        except psutil.Error:
            continue
    assert leftovers == []


def test_bad_form_value_shows_the_server_message(lab, page):
    page.locator(".jp-SparkAppliance-launch").click()
    form = page.locator(".jp-SparkAppliance-form")
    form.locator('input[name="workers"]').fill("-1")
    form.locator('button[type="submit"]').click()
    error = page.locator(".jp-SparkAppliance-error")
    error.wait_for(timeout=30_000)
    assert "workers: must be at least 0, not -1" in error.inner_text()
    assert rest(lab, "appliance") == {"appliances": []}
    shot(page, "panel-error.png")


def test_palette_launcher_and_settings_are_registered(lab, page):
    commands = ["spark-appliance:launch", "spark-appliance:stop", "spark-appliance:scale"]
    for command in commands:
        assert page.evaluate(f"window.jupyterapp.commands.hasCommand('{command}')")
    # The launcher tile.
    page.evaluate("window.jupyterapp.commands.execute('launcher:create')")
    page.locator(".jp-LauncherCard:visible", has_text="Spark cluster").first.wait_for(timeout=30_000)
    # The palette lists them under "Spark".
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Spark cluster")
    items = page.locator(".lm-CommandPalette-item")
    items.first.wait_for(timeout=10_000)
    labels = items.all_inner_texts()
    assert any("Launch Spark cluster" in t for t in labels) and any("Stop Spark cluster" in t for t in labels)
    page.keyboard.press("Escape")
    # Form defaults come from the settings registry.
    page.evaluate("""window.jupyterapp.serviceManager.settings.save('jupyter-spark-appliance:plugin',
                     JSON.stringify({workers: 3, workerMemory: 2048}))""")
    page.reload()
    page.locator('[data-id="jp-spark-appliance-sidebar"]').wait_for(timeout=60_000)
    page.evaluate("window.jupyterapp.shell.activateById('jp-spark-appliance-sidebar')")
    page.locator(".jp-SparkAppliance-launch").click()
    form = page.locator(".jp-SparkAppliance-form")
    page.wait_for_function("document.querySelector('.jp-SparkAppliance-form input[name=workers]').value === '3'",
                           timeout=30_000)
    assert form.locator('input[name="worker_memory"]').input_value() == "2048"


def test_live_updates_survive_dropped_streams(lab, page):
    """The server ends each events stream after 4 s here; the panel must reconnect and keep up."""
    # Count the streams the page opens (EventSource's own retries reuse one object, so count
    # (re)opens instead).
    page.add_init_script("""window.__opens = 0; const Orig = window.EventSource;
        window.EventSource = class extends Orig { constructor(...a) { super(...a);
            this.addEventListener('open', () => window.__opens++); } };""")
    page.reload()
    page.locator('[data-id="jp-spark-appliance-sidebar"]').wait_for(timeout=60_000)
    page.evaluate("window.jupyterapp.shell.activateById('jp-spark-appliance-sidebar')")
    page.wait_for_function("window.__opens >= 3", timeout=60_000)  # two streams ended, two reconnections
    r = requests.post(f"{lab['base']}/spark-appliance/appliance", headers={"Authorization": f"token {lab['token']}"},
                      json={"id": "relive", "containers": [
                          {"id": "spark-master", "type": "service", "image": "spark-master",
                           "resources": {"cpus": 1, "mem": 512},
                           "ports": [{"container_port": 8080, "name": "spark-ui"}, {"container_port": 7077}]}]})
    assert r.status_code == 201, r.text
    card = page.locator('.jp-SparkAppliance-card[data-appliance-id="relive"]')
    page.locator('.jp-SparkAppliance-card[data-appliance-id="relive"][data-state="running"]').wait_for(timeout=120_000)
    requests.delete(f"{lab['base']}/spark-appliance/appliance/relive",
                    headers={"Authorization": f"token {lab['token']}"})
    card.wait_for(state="detached", timeout=60_000)  # the deletion arrives live too
    assert page.evaluate("window.__opens") >= 3
