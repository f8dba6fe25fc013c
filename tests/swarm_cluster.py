"""A two-node Docker Swarm on one machine, for the swarm backend's multi-node test.

Two extra Docker engines, each in a network namespace of its own (``n1`` the
manager, ``n2`` a worker), plugged into a bridge that lives in a third
namespace (the "switch"), with the host on the same switch:

    host 10.213.7.1 ──┐
    n1   10.213.7.2 ──┼── bridge in the switch namespace
    n2   10.213.7.3 ──┘

The switch is a namespace of its own because a bridge on the host would pass
its frames through the host's firewall, whose FORWARD policy Docker sets to
DROP. The engine CI's tests share (a single-node swarm on 127.0.0.1, which no
other node could join) is never touched, except that the project's images are
pushed from it to the test's registry.

Images come from a registry, as on real machines: Debian's ``docker-registry``
on 127.0.0.1 of the host (where the host engine pushes) and of each node (where
its engine pulls), all three serving one storage directory, so the same image
reference (``127.0.0.1:PORT/...@sha256:...``) means the same bytes on every node
and no engine needs an insecure-registry setting (loopback registries are
allowed). Everything the cluster makes (namespaces, veths, processes, data
directories, image tags) is removed by :meth:`TwoNodeSwarm.close`, which also
undoes a half-finished :meth:`start`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

SUBNET = "10.213.7"
TOOLS = ("ip", "nsenter", "dockerd", "docker-registry")


class Unavailable(RuntimeError):
    """This machine cannot run the two-node swarm (not root, a tool missing)."""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - not up yet
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"{what} within {timeout:g} s (last error: {last})")


class TwoNodeSwarm:
    def __init__(self, base: Path, log=print):  # noqa: ANN001
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if os.geteuid() != 0 or missing:
            raise Unavailable("needs root and " + ", ".join(TOOLS) +
                              (f" (missing: {', '.join(missing)})" if missing else " (not root)"))
        self.base = base
        self.log = log
        tag = uuid.uuid4().hex[:4]
        self.tag = tag
        self.switch = f"jsa{tag}sw"
        self.nodes = {"n1": f"{SUBNET}.2", "n2": f"{SUBNET}.3"}
        self.host_addr = f"{SUBNET}.1"
        self.port = _free_port()
        self.registry = f"127.0.0.1:{self.port}"
        self.namespaces: list[str] = []
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.clients: dict[str, Any] = {}
        self.pushed: list[str] = []

    # ------------------------------------------------------------------ names

    def ns(self, node: str) -> str:
        return f"jsa{self.tag}{node}"

    def socket(self, node: str) -> str:
        return f"unix:///run/jsa{self.tag}{node}.sock"

    def _in_ns(self, ns: str | None, *argv: str) -> list[str]:
        return [*(["nsenter", f"--net=/run/netns/{ns}"] if ns else []), *argv]

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        try:
            self._network()
            self._registries()
            self._engines()
            self._swarm()
        except BaseException:
            self.close()
            raise

    def _network(self) -> None:
        for ns in (self.switch, self.ns("n1"), self.ns("n2")):
            _run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for node, addr in (("h", self.host_addr), ("n1", self.nodes["n1"]), ("n2", self.nodes["n2"])):
            inner, outer = f"js{self.tag}{node}", f"js{self.tag}{node}s"  # <= 15 characters
            _run("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            _run("ip", "link", "set", outer, "netns", self.switch)
            _run("ip", "-n", self.switch, "link", "set", outer, "master", "br0", "up")
            if node == "h":
                _run("ip", "addr", "add", f"{addr}/24", "dev", inner)
                _run("ip", "link", "set", inner, "up")
            else:
                _run("ip", "link", "set", inner, "netns", self.ns(node))
                _run("ip", "-n", self.ns(node), "addr", "add", f"{addr}/24", "dev", inner)
                _run("ip", "-n", self.ns(node), "link", "set", inner, "up")

    def _spawn(self, key: str, argv: list[str]) -> None:
        out = open(self.base / f"{key}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.processes[key] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def _registries(self) -> None:
        storage = self.base / "registry"
        storage.mkdir(parents=True)
        for where in ("host", "n1", "n2"):
            config = self.base / f"registry-{where}.yml"
            config.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: "
                              f"{{rootdirectory: {storage}}}}}\nhttp: {{addr: {self.registry}}}\n")
            self._spawn(f"registry-{where}", self._in_ns(None if where == "host" else self.ns(where),
                                                         "docker-registry", "serve", str(config)))
        _wait("the host's registry answers", lambda: socket.create_connection(("127.0.0.1", self.port), 1).close()
              or True, 30)

    def _engines(self) -> None:
        import docker

        for node in self.nodes:
            root = self.base / node
            self._spawn(f"dockerd-{node}", self._in_ns(
                self.ns(node), "dockerd", "--data-root", str(root / "data"), "--exec-root", f"/run/jsa{self.tag}{node}",
                "-H", self.socket(node), "--pidfile", f"/run/jsa{self.tag}{node}.pid",
                "--cgroup-parent", f"/jsa{self.tag}{node}"))
        for node in self.nodes:
            self.clients[node] = docker.DockerClient(base_url=self.socket(node), version="1.41", timeout=120)
            _wait(f"the engine of {node} answers", self.clients[node].ping, 90)

    def _swarm(self) -> None:
        n1, n2 = self.clients["n1"], self.clients["n2"]
        n1.swarm.init(advertise_addr=self.nodes["n1"], listen_addr=f"{self.nodes['n1']}:2377",
                      default_addr_pool=["10.214.0.0/16"], subnet_size=24)
        token = n1.swarm.attrs["JoinTokens"]["Worker"]
        n2.swarm.join(remote_addrs=[f"{self.nodes['n1']}:2377"], join_token=token,
                      advertise_addr=self.nodes["n2"], listen_addr=f"{self.nodes['n2']}:2377")
        _wait("both nodes ready", lambda: sum(n.attrs["Status"]["State"] == "ready" for n in n1.nodes.list()) == 2,
              60)

    def node_ids(self) -> dict[str, str]:
        """Node name (n1, n2) -> swarm node id."""
        return {node: self.clients[node].info()["Swarm"]["NodeID"] for node in self.nodes}

    def push(self, host_engine: Any,
             roles: tuple[str, ...] = ("spark-master", "spark-worker", "livy")) -> dict[str, str]:
        """Push the images of ``roles`` (spark-livy's) from the host engine to the registry; pull them on both nodes.

        Only those: the Sparkmagic image adds about 580 MB of layers of its own to push
        and, on each node, to pull, and Connect's a push and two pulls, for containers the
        two-node test never runs.
        """
        from concurrent.futures import ThreadPoolExecutor

        from jupyter_spark_appliance.backends.swarm import push_images, registry_ref
        from jupyter_spark_appliance.spark.roles import ROLES

        self.pushed = [registry_ref(self.registry, ROLES[r].image) for r in roles]  # tags to remove
        pinned = push_images(self.registry, host_engine, log=self.log, roles=roles)

        def pull(node: str) -> None:
            started = time.monotonic()
            for ref in pinned.values():
                self.clients[node].images.pull(ref)
            self.log(f"{node} pulled the images in {time.monotonic() - started:.1f} s")

        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(pull, self.clients))
        return pinned

    # ------------------------------------------------------------------ close

    def close(self, host_engine: Any = None) -> None:
        """Undo everything, in reverse; every step runs even when an earlier one fails."""
        started = time.monotonic()
        for node in ("n2", "n1"):
            client = self.clients.get(node)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.swarm.leave(force=True)
        self.log(f"both nodes left the swarm in {time.monotonic() - started:.1f} s")
        for node in ("n2", "n1"):
            self._stop(f"dockerd-{node}", timeout=60)
        # What the engines started and did not stop (container shims) lives in our namespaces.
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for key in [k for k in self.processes if k.startswith("registry-")]:
            self._stop(key, timeout=10)
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                client.close()
        for ns in reversed(self.namespaces):
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("ip", "netns", "del", ns)  # deletes the veths too (each has an end in the switch)
        self.namespaces.clear()
        with contextlib.suppress(subprocess.CalledProcessError):
            _run("ip", "link", "del", f"js{self.tag}h")  # gone with the switch already, normally
        started = time.monotonic()
        self._unmount_and_remove()
        self.log(f"removed the nodes' data in {time.monotonic() - started:.1f} s")
        if host_engine is not None:
            for ref in self.pushed:
                with contextlib.suppress(Exception):
                    host_engine.images.remove(ref)  # the tag only: the image keeps its own
        for path in (f"/run/jsa{self.tag}n1", f"/run/jsa{self.tag}n2"):
            shutil.rmtree(path, ignore_errors=True)

    def _stop(self, key: str, timeout: float) -> None:
        proc = self.processes.pop(key, None)
        if proc is None or proc.poll() is not None:
            return
        started = time.monotonic()
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        self.log(f"stopped {key} in {time.monotonic() - started:.1f} s")

    def _unmount_and_remove(self) -> None:
        base = str(self.base)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(base) or line.split()[1].startswith(f"/run/jsa{self.tag}")]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        for node in self.nodes:
            shutil.rmtree(self.base / node, ignore_errors=True)
        shutil.rmtree(self.base / "registry", ignore_errors=True)
