"""The Spark Connect readiness probe, against the two things it must tell apart (fast layer).

Docker's userland proxy accepts a connection on a published port before anything in
the container listens, then closes it: a TCP connect alone said "ready" too early.
The servers here are sockets in this process, standing in for the proxy and for a
gRPC server's first frame; the real Connect server answers the same probe in
``test_docker_backend.py::test_spark_livy_on_docker`` and every Connect test.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from jupyter_spark_appliance.spark.probes import HTTP2_PREFACE, http2_answers


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    listeners: list[socket.socket] = []

    def start(handle: Callable[[socket.socket], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                handle(conn)

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[1]

    yield start
    for listener in listeners:
        listener.close()


def test_a_port_that_accepts_and_closes_is_not_ready(server) -> None:
    port = server(lambda conn: None)  # what the proxy does with nothing behind it
    assert http2_answers("127.0.0.1", port) is False


def test_a_port_that_accepts_and_stays_silent_is_not_ready(server) -> None:
    done = threading.Event()
    port = server(lambda conn: done.wait(5))
    try:
        assert http2_answers("127.0.0.1", port, timeout=0.3) is False
    finally:
        done.set()


def test_an_http2_server_answering_with_settings_is_ready(server) -> None:
    received: list[bytes] = []

    def grpc_like(conn: socket.socket) -> None:
        data = b""
        while len(data) < len(HTTP2_PREFACE):
            data += conn.recv(len(HTTP2_PREFACE) - len(data))
        received.append(data)
        conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an empty SETTINGS frame, as gRPC servers send first

    port = server(grpc_like)
    assert http2_answers("127.0.0.1", port) is True
    assert received == [HTTP2_PREFACE]


def test_nothing_listening_is_not_ready() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert http2_answers("127.0.0.1", port) is False
