"""Stopping a process together with what it started (its process group), and its priority.

A Spark daemon starts other JVMs (a worker its executors, spark-class a JVM
that replaces it), so stopping just one pid would leave the rest behind.
Shared by the local backend and the recording of class-data-sharing archives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil


def stop_group(pid: int, child: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL what is left; reap."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pgid = None
    members = _group_members(pgid, pid)
    _signal(pgid, pid, signal.SIGTERM)
    if child is not None:
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + grace
    alive = members
    while alive and time.monotonic() < deadline:
        _, alive = psutil.wait_procs(alive, timeout=0.2)
    if alive or (child is not None and child.poll() is None):
        _signal(pgid, pid, signal.SIGKILL)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
    if child is not None:
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            pass


def _group_members(pgid: int | None, pid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid == pid or (pgid is not None and os.getpgid(p.pid) == pgid):
                out.append(p)
        except (psutil.Error, ProcessLookupError):
            continue
    return out


def _signal(pgid: int | None, pid: int, sig: signal.Signals) -> None:
    try:
        if pgid is not None and pgid == pid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL every member of a process group, even one whose leader is gone (a JVM that
    outlived the Python that started it), and wait for them."""
    members = _group_members(pgid, pgid)
    for p in members:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(members, timeout=timeout)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_priority(pid: int, value: int) -> None:
    """Set the niceness of ``pid``, its descendants and every thread of each (Linux: niceness is per thread).

    Used to start a JVM that the user does not wait for first (the gateway's warm driver)
    behind the ones they do, and to give it back a normal priority once it is ready.
    Lowering niceness needs privileges: without them the process simply stays nice.
    """
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return
    for proc in procs:
        try:
            tids = [t.id for t in proc.threads()]
        except psutil.Error:
            continue
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, value)
            except OSError:
                pass
