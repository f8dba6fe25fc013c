"""An ipywidgets view of one appliance: states, endpoint links, running jobs, a worker slider, Stop.

Links go through the Jupyter server (the model's ``ui`` paths, served by its
authenticated proxy), so they work wherever the notebook's browser is.

It keeps itself current by polling the REST API from a daemon thread while it
is shown (kernels have no access to the server's event bus without extra
plumbing; a 2 s poll is cheap and survives server restarts).
"""

from __future__ import annotations

import html
import threading
from typing import Any

from .client import ApplianceClient, ApplianceError
from .spec import MAX_INSTANCES

COLOURS = {"running": "#2e7d32", "staging": "#f0ad4e", "pending": "#9e9e9e", "submitted": "#9e9e9e",
           "failed": "#c62828", "killed": "#616161", "success": "#1565c0"}


def _link(e: dict[str, Any]) -> str:
    name = html.escape(e["name"] or "")
    if e["name"] == "worker-ui":
        name = f"worker {e.get('instance', 0)}"
    href = e.get("ui") or (e["url"] if e.get("url", "").startswith("http") else None)
    if href:
        return f'<a href="{html.escape(href)}" target="_blank">{name}</a>'
    if e.get("url"):  # Spark Connect: an address for %spark_appliance connect, not a page
        return f'{name} <code>{html.escape(e["url"])}</code>'
    return ""


def _bar(p: dict[str, Any], label: str) -> str:
    width = round(p["progress"] * 100)
    colour = "#c62828" if p["failed"] else "#1565c0"
    return (f"<div class='jsa-progress' data-progress='{p['progress']}' style='display:flex;gap:6px;"
            f"align-items:center'><span style='flex:1'>{html.escape(label)}</span>"
            f"<span style='width:40%;height:8px;background:#e0e0e0;border-radius:4px;overflow:hidden'>"
            f"<span style='display:block;height:100%;width:{width}%;background:{colour}'></span></span>"
            f"<span>{p['done']}/{p['tasks']}</span></div>")


def render_applications(apps: dict[str, Any] | None) -> str:
    """Running applications with their running (and latest) jobs and active stages, as progress bars."""
    if not apps or not apps.get("applications"):
        return ""
    out = ["<div><b>Applications</b>"]
    for a in apps["applications"]:
        name = html.escape(a["name"] or a["id"])
        title = f'<a href="{html.escape(a["ui"])}" target="_blank">{name}</a>' if a.get("ui") else name
        out.append(f"<div class='jsa-app' data-app-id='{html.escape(a['id'])}'>{title} ({a['cores']} cores)")
        for j in a["jobs"]:
            out.append("<div style='margin-left:1em'>"
                       + _bar(j["progress"], f"Job {j['id']} {j['status'].lower()}: {j['name']}"))
            for st in j["stages"]:
                out.append("<div style='margin-left:1em'>" + _bar(st["progress"], f"Stage {st['id']}: {st['name']}")
                           + "</div>")
            out.append("</div>")
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def render_html(model: dict[str, Any], apps: dict[str, Any] | None = None) -> str:
    rows = []
    for c in model["containers"]:
        colour = COLOURS.get(c["state"], "#9e9e9e")
        running = sum(1 for i in c["instance_states"] if i["state"] == "running")
        links = " ".join(link for e in c["endpoints"] if (link := _link(e)))
        rows.append(f"<tr><td>{html.escape(c['id'])}</td><td style='color:{colour}'>{html.escape(c['state'])}</td>"
                    f"<td>{running}/{c['instances']}</td><td>{links}</td></tr>")
    reason = f"<pre>{html.escape(model['reason'])}</pre>" if model.get("reason") else ""
    sm = model.get("sparkmagic") or {}
    note = f"<div>Sparkmagic → {html.escape(sm['url'])}</div>" if sm.get("url") else ""
    return (f"<b>{html.escape(model['id'])}</b>: <span style='color:{COLOURS.get(model['state'], '#999')}'>"
            f"{html.escape(model['state'])}</span>"
            "<table><tr><th>container</th><th>state</th><th>running</th><th>endpoints</th></tr>"
            + "".join(rows) + "</table>" + reason + note + render_applications(apps))


def render_text(model: dict[str, Any]) -> str:
    lines = [f"{model['id']}: {model['state']}"]
    for c in model["containers"]:
        running = sum(1 for i in c["instance_states"] if i["state"] == "running")
        urls = ", ".join(e["url"] for e in c["endpoints"] if e.get("url"))
        lines.append(f"  {c['id']:<14} {c['state']:<9} {running}/{c['instances']}  {urls}")
    if model.get("reason"):
        lines.append(f"  reason: {model['reason']}")
    return "\n".join(lines)


class ApplianceView:
    def __init__(self, client: ApplianceClient, app_id: str, worker: str = "spark-worker",
                 interval: float = 2.0):
        import ipywidgets as w

        self.client, self.app_id, self.worker, self.interval = client, app_id, worker, interval
        self.html = w.HTML()
        self.slider = w.IntSlider(description="workers", min=0, max=MAX_INSTANCES, continuous_update=False)
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.message = w.HTML()
        # Shown while Livy statements wait for cores: the gateway's words and one more worker.
        self.short = w.HTML()
        self.add_worker = w.Button(description="Add a worker", button_style="warning", icon="plus")
        self.short_box = w.HBox([self.short, self.add_worker], layout=w.Layout(display="none"))
        self.widget = w.VBox([self.html, self.short_box, w.HBox([self.slider, self.stop_button]), self.message])
        self._syncing = False
        self._closed = threading.Event()
        self.refresh()
        self.slider.observe(self._on_slider, names="value")
        self.stop_button.on_click(self._on_stop)
        self.add_worker.on_click(lambda _: self._on_slider({"new": self.slider.value + 1}))
        threading.Thread(target=self._poll, daemon=True).start()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def refresh(self) -> dict[str, Any] | None:
        try:
            model = self.client.get(self.app_id)
        except ApplianceError as e:
            if e.status == 404:
                self.html.value = f"<b>{html.escape(self.app_id)}</b>: stopped"
                self.slider.disabled = self.stop_button.disabled = True
                self._closed.set()
            else:
                self.message.value = html.escape(str(e))
            return None
        apps = None
        if any(c["role"] == "spark-master" and c["state"] == "running" for c in model["containers"]):
            try:
                apps = self.client.applications(self.app_id)
            except ApplianceError:
                apps = None
        self.html.value = render_html(model, apps)
        res = model.get("resources") or {}
        self.short_box.layout.display = "flex" if res.get("short") else "none"
        self.short.value = html.escape(res.get("message") or "statements wait for cluster resources") \
            if res.get("short") else ""
        worker = next((c for c in model["containers"] if c["id"] == self.worker), None)
        self._syncing = True
        try:
            if worker is None:
                self.slider.layout.display = "none"
            else:
                self.slider.max = max(MAX_INSTANCES, worker["instances"])
                self.slider.value = worker["instances"]
                self.slider.disabled = worker["state"] == "staging"
        finally:
            self._syncing = False
        return model

    def _on_slider(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        try:
            self.client.scale(self.app_id, self.worker, int(change["new"]))
            self.slider.disabled = True
            self.message.value = f"scaling {self.worker} to {change['new']}…"
        except ApplianceError as e:
            self.message.value = html.escape(str(e))

    def _on_stop(self, _: Any) -> None:
        self.stop_button.disabled = True
        self.message.value = "stopping…"
        try:
            self.client.delete(self.app_id)
            self.message.value = "stopped"
        except ApplianceError as e:
            self.message.value = html.escape(str(e))
        self.refresh()

    def _poll(self) -> None:
        while not self._closed.wait(self.interval):
            model = self.refresh()
            if model is not None and self.message.value.startswith("scaling") and not self.slider.disabled:
                self.message.value = ""

    def close(self) -> None:
        self._closed.set()
        self.widget.close()
