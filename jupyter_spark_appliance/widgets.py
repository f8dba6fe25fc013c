"""An ipywidgets view of one appliance: states, endpoint links, a worker slider, Stop.

It keeps itself current by polling the REST API from a daemon thread while it
is shown (kernels have no access to the server's event bus without extra
plumbing; a 2 s poll is cheap and survives server restarts).
"""

from __future__ import annotations

import html
import threading
from typing import Any

from .client import ApplianceClient, ApplianceError

COLOURS = {"running": "#2e7d32", "staging": "#f0ad4e", "pending": "#9e9e9e", "submitted": "#9e9e9e",
           "failed": "#c62828", "killed": "#616161", "success": "#1565c0"}


def render_html(model: dict[str, Any]) -> str:
    rows = []
    for c in model["containers"]:
        colour = COLOURS.get(c["state"], "#9e9e9e")
        running = sum(1 for i in c["instance_states"] if i["state"] == "running")
        links = " ".join(f'<a href="{html.escape(e["url"])}" target="_blank">{html.escape(e["name"] or "")}</a>'
                         for e in c["endpoints"] if e.get("url"))
        rows.append(f"<tr><td>{html.escape(c['id'])}</td><td style='color:{colour}'>{html.escape(c['state'])}</td>"
                    f"<td>{running}/{c['instances']}</td><td>{links}</td></tr>")
    reason = f"<pre>{html.escape(model['reason'])}</pre>" if model.get("reason") else ""
    sm = model.get("sparkmagic") or {}
    note = f"<div>Sparkmagic → {html.escape(sm['url'])}</div>" if sm.get("url") else ""
    return (f"<b>{html.escape(model['id'])}</b>: <span style='color:{COLOURS.get(model['state'], '#999')}'>"
            f"{html.escape(model['state'])}</span>"
            "<table><tr><th>container</th><th>state</th><th>running</th><th>endpoints</th></tr>"
            + "".join(rows) + "</table>" + reason + note)


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
        self.slider = w.IntSlider(description="workers", min=0, max=16, continuous_update=False)
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.message = w.HTML()
        self.widget = w.VBox([self.html, w.HBox([self.slider, self.stop_button]), self.message])
        self._syncing = False
        self._closed = threading.Event()
        self.refresh()
        self.slider.observe(self._on_slider, names="value")
        self.stop_button.on_click(self._on_stop)
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
        self.html.value = render_html(model)
        worker = next((c for c in model["containers"] if c["id"] == self.worker), None)
        self._syncing = True
        try:
            if worker is None:
                self.slider.layout.display = "none"
            else:
                self.slider.max = max(self.slider.max, worker["instances"])
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
