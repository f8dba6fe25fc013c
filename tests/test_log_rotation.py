"""Instance logs are capped by copytruncate rotation (spark/logrotate.py).

The unit tests rotate a file that a real child process writes through an
``O_APPEND`` descriptor, as a local instance writes its log; the last test
goes through a real Jupyter server with a tiny ``log_max_bytes`` and a real
Spark master JVM.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_spark_appliance.spark.logrotate import backup_path, open_append, rotate_if_larger, tail_lines

LINE = 64  # bytes per line the writer writes: "%08d" + padding + "\n"

#: Writes numbered fixed-length lines, one write(2) each. "burst N": N lines per byte read
#: from stdin, then one byte back on stderr; "free": as fast as it can until stdin closes.
WRITER = r"""
import os, sys, threading
mode, n = sys.argv[1], int(sys.argv[2])
count = 0
def line():
    global count
    os.write(1, b"%08d " % count + b"x" * (64 - 10) + b"\n")
    count += 1
if mode == "burst":
    while os.read(0, 1):
        for _ in range(n):
            line()
        os.write(2, b"!")
else:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        line()
"""


def writer(log: Path, mode: str, n: int = 0) -> subprocess.Popen[bytes]:
    fd = open_append(log)
    try:
        return subprocess.Popen([sys.executable, "-c", WRITER, mode, str(n)], stdin=subprocess.PIPE,
                                stdout=fd, stderr=subprocess.PIPE)
    finally:
        os.close(fd)


def numbers(path: Path) -> list[int]:
    """The line numbers in a file, checking that every line is whole and nothing else is there."""
    data = path.read_bytes()
    assert b"\0" not in data, f"{path.name} has NUL bytes (a write landed past a truncation)"
    lines = data.split(b"\n")
    assert lines[-1] == b"", f"{path.name} ends mid-line"
    for raw in lines[:-1]:
        assert len(raw) == LINE - 1 and raw[8:9] == b" ", (path.name, raw[:20])
    return [int(raw[:8]) for raw in lines[:-1]]


def backups(log: Path) -> list[str]:
    return sorted(p.name for p in log.parent.iterdir() if p.name.startswith(log.name + "."))


def test_rotation_in_step_with_a_writer_keeps_the_cap_and_loses_nothing(tmp_path):
    log, cap, burst = tmp_path / "w.log", 4096, 20  # a burst: 1280 bytes, a "tick's output"
    child = writer(log, "burst", burst)
    assert child.stdin is not None and child.stderr is not None
    rotations = ticks = 0

    def tick() -> None:
        nonlocal ticks
        child.stdin.write(b"t")
        child.stdin.flush()
        assert child.stderr.read(1) == b"!"  # the burst is written
        ticks += 1

    try:
        for _ in range(40):
            tick()
            assert log.stat().st_size <= cap + burst * LINE
            rotations += rotate_if_larger(log, cap, backups=2)
            assert log.stat().st_size <= cap
            assert set(backups(log)) <= {"w.log.1", "w.log.2"}
        if not log.stat().st_size:
            tick()  # the last tick rotated: one more, so the live file has lines to check
    finally:
        child.stdin.close()
        child.wait(10)
    assert rotations >= 3 and backups(log) == ["w.log.1", "w.log.2"]
    # Oldest to newest, the kept files are one unbroken run of lines ending with the last one
    # written: in step, nothing falls between a copy and its truncation.
    kept = numbers(backup_path(log, 2)) + numbers(backup_path(log, 1)) + numbers(log)
    assert kept == list(range(kept[0], ticks * burst))
    # The first line after a truncation starts the file (O_APPEND), not at the old offset.
    assert numbers(log)[0] == numbers(backup_path(log, 1))[-1] + 1


def test_rotation_while_a_child_writes_freely(tmp_path):
    log, cap = tmp_path / "f.log", 16384
    child = writer(log, "free")
    assert child.stdin is not None
    rotations, deadline = 0, time.monotonic() + 20
    try:
        while rotations < 6:
            assert time.monotonic() < deadline, f"only {rotations} rotations"
            rotations += rotate_if_larger(log, cap, backups=2)
            assert len(backups(log)) <= 2
    finally:
        child.stdin.close()
        child.wait(10)
    rotate_if_larger(log, cap, backups=2)
    assert log.stat().st_size <= cap
    assert backups(log) == ["f.log.1", "f.log.2"]
    older, newer, live = numbers(backup_path(log, 2)), numbers(backup_path(log, 1)), numbers(log)
    for run in (older, newer, live):
        assert run == sorted(run) and len(set(run)) == len(run)
    # Each file starts after the previous one ends (only the lines written between a copy's
    # last read and its truncation may be missing), and the live file holds the last lines.
    assert older[-1] < newer[0] and newer[-1] < (live[0] if live else 10**9)


def test_fewer_backups_and_none(tmp_path):
    log = tmp_path / "b.log"
    for n in range(1, 5):
        backup_path(log, n).write_text(f"old {n}\n")
    log.write_text("x" * 100 + "\n")
    assert rotate_if_larger(log, 10, backups=1)
    assert backups(log) == ["b.log.1"] and backup_path(log, 1).read_text().startswith("x")
    log.write_text("y" * 100 + "\n")
    assert rotate_if_larger(log, 10, backups=0)
    assert backups(log) == [] and log.stat().st_size == 0
    log.write_text("z" * 100 + "\n")
    assert not rotate_if_larger(log, 0, backups=2)  # 0: never
    assert not rotate_if_larger(tmp_path / "missing.log", 10, backups=2)


def test_tail_reads_on_into_the_last_copy(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    assert rotate_if_larger(log, 10, backups=2)
    log.write_text("line 10\nline 11\n")
    assert tail_lines(log, 3) == ["line 9", "line 10", "line 11"]
    assert tail_lines(log, 2) == ["line 10", "line 11"]
    assert tail_lines(log, 0) == []


# ---------------------------------------------------------------------- through a server

CAP = 512  # a master logs about 2 KB as it starts: rotated more than once


@pytest.fixture
def jp_server_config(appliance_data_dir):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_spark_appliance": True}},
        "SparkApplianceApp": {"data_dir": str(appliance_data_dir), "start_timeout": 240.0,
                              "log_max_bytes": CAP, "log_backups": BACKUPS},
    }


BACKUPS = 1  # not the default (2): a server that ignored the option would keep a .2 after the second rotation


def poke(port: int) -> None:
    """Make a running master write about 1.8 KB to its log: bytes that are no Spark RPC frame on its
    RPC port, which it logs as a warning with a stack trace ("Exception in connection from ...")."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\xff" * 64)


@pytest.mark.spark
async def test_a_local_instance_log_is_rotated_and_the_logs_route_still_reads_it(api, appliance_data_dir):
    spec = {"id": "rot", "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080}, {"container_port": 7077}]}]}
    code, model = await api.call("POST", "appliance", spec)
    assert code == 201, model
    try:
        # Rotated before or after it was ready: when before, its ready line was read from .1.
        model = await api.wait_state("rot", {"running", "failed"}, timeout=240)
        assert model["state"] == "running", model["reason"]
        log = appliance_data_dir / "rot" / "logs" / "spark-master-0.log"
        deadline = time.monotonic() + 30
        # The master is idle once it runs: the next tick brings the live file under the cap.
        while not (backup_path(log, 1).exists() and log.stat().st_size <= CAP):
            assert time.monotonic() < deadline, f"not rotated: {log.stat().st_size} bytes, {backups(log)}"
            await asyncio.sleep(0.2)
        # A second rotation: the master writes more than the cap again; log_backups = 1 keeps only the newest copy.
        first = backup_path(log, 1).read_bytes()
        rpc = next(e["host_port"] for e in model["containers"][0]["endpoints"] if e["container_port"] == 7077)
        deadline = time.monotonic() + 60
        while backup_path(log, 1).read_bytes() == first or log.stat().st_size > CAP:
            assert time.monotonic() < deadline, f"not rotated again: {log.stat().st_size} bytes, {backups(log)}"
            if log.stat().st_size <= CAP:
                await asyncio.to_thread(poke, rpc)
            await asyncio.sleep(0.5)
        assert backups(log) == ["spark-master-0.log.1"]
        for path in (log, backup_path(log, 1)):
            assert b"\0" not in path.read_bytes()
        code, logs = await api.call("GET", "appliance/rot/container/spark-master/logs", tail=50)
        assert code == 200, logs
        lines = logs["instances"][0]["lines"]
        assert lines and any("Master" in line or "master" in line for line in lines), lines
    finally:
        assert (await api.call("DELETE", "appliance/rot"))[0] == 204
