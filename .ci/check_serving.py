"""Check that a running Jupyter server (started by .ci/check-install) serves this extension.

python3 .ci/check_serving.py URL TOKEN PID [--no-docker-sdk] [--no-spark]

Waits for the server (or fails when PID exits), then checks, each against the real server:
the /lab page config lists the prebuilt panel and its remoteEntry script is served; the
extension's /spark-appliance/templates route answers 200 with the token and 403 without.
--no-docker-sdk: a docker-backend launch answers 503 saying to install the [docker] extra.
--no-spark: a local-backend launch answers 400 saying to install pyspark.
Standard library only, so any Python can run it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

NAME = "jupyter-spark-appliance"


def request(url: str, token: str | None, method: str = "GET", body: object = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"token {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def fail(msg: str) -> None:
    print(f"check_serving: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def wait(base: str, token: str, pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            fail(f"the server (pid {pid}) exited before answering")
        try:
            if request(f"{base}/api/status", token)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    fail(f"no answer from {base}/api/status within {timeout:.0f} s")


def main() -> None:
    base, token, pid = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3])
    flags = set(sys.argv[4:])
    wait(base, token, pid)

    status, page = request(f"{base}/lab", token)
    if status != 200:
        fail(f"GET /lab: {status}")
    m = re.search(rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
    if not m:
        fail("GET /lab: no page config")
    config = json.loads(m.group(1))
    ext = next((e for e in config.get("federated_extensions", []) if e.get("name") == NAME), None)
    if ext is None:
        fail(f"the /lab page config does not list {NAME} among its federated_extensions "
             f"({[e.get('name') for e in config.get('federated_extensions', [])]})")
    if any(NAME in d for d in config.get("disabledExtensions", [])):
        fail(f"{NAME} is disabled in the /lab page config")
    url = urllib.parse.urljoin(base + "/", f"{config.get('fullLabextensionsUrl', '/lab/extensions').rstrip('/')}/{NAME}/{ext['load']}")
    status, script = request(url, token)
    if status != 200 or b"jupyter-spark-appliance" not in script:
        fail(f"GET {url}: {status}, {len(script)} bytes")
    print(f"check_serving: /lab lists {NAME}; GET {url[len(base):]} -> 200 ({len(script)} bytes)")

    status, body = request(f"{base}/spark-appliance/templates", token)
    if status != 200 or "templates" not in json.loads(body) or b'"spark-livy"' not in body:
        fail(f"GET /spark-appliance/templates: {status} {body[:200]!r}")
    anonymous = request(f"{base}/spark-appliance/templates", None)[0]
    if anonymous != 403:
        fail(f"GET /spark-appliance/templates without the token: {anonymous}, expected 403")
    print("check_serving: GET /spark-appliance/templates -> 200 with the token, 403 without")

    if "--no-docker-sdk" in flags:
        status, body = request(f"{base}/spark-appliance/appliance", token, "POST",
                               {"template": "spark-livy", "backend": "docker"})
        if status != 503 or b"pip install jupyter-spark-appliance[docker]" not in body:
            fail(f"docker launch without the docker package: {status} {body[:300]!r}, expected 503 naming the extra")
        print("check_serving: docker launch without the 'docker' package -> 503 naming the [docker] extra")
    if "--no-spark" in flags:
        status, body = request(f"{base}/spark-appliance/appliance", token, "POST",
                               {"template": "spark-livy", "backend": "local"})
        if status != 400 or b"install pyspark" not in body:
            fail(f"local launch without pyspark: {status} {body[:300]!r}, expected 400 naming pyspark")
        print("check_serving: local launch without pyspark -> 400 naming the [spark] extra")


if __name__ == "__main__":
    main()
