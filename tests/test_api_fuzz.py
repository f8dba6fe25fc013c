"""Schemathesis against the shipped OpenAPI document, on a real server process: no 5xx, every body as declared.

Schemathesis generates requests (valid and invalid) for every operation of
``openapi.json`` and checks each answer: never a server error, and every JSON
body validates against the operation's declared response schema (whose
objects are closed: an undeclared field fails). The server is a real
``jupyter server`` process (tests/jupyter_process.py), since schemathesis'
client blocks and would stall an in-process server. Its local backend runs no
role (``local_roles = {}``), so a generated document that happens to be valid
gets a 400 instead of starting JVMs; the events streams end after a second.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from jupyter_spark_appliance import wire

from jupyter_process import Server

SCHEMA = schemathesis.openapi.from_dict(json.loads(wire.openapi_path().read_text()))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    s = Server(root, root / "appliances", "--SparkApplianceApp.local_roles={}",
               "--SparkApplianceApp.event_stream_seconds=1", "--SparkApplianceApp.write_sparkmagic_config=False")
    yield s
    # Whatever the fuzzing created, nothing may be left running.
    code, body = s.call("GET", "appliance")
    assert code == 200
    for app in body["appliances"]:
        assert s.call("DELETE", f"appliance/{app['id']}")[0] in (204, 404)
    s.stop()
    print(f"schemathesis requests by operation: {COUNTS} (total {sum(COUNTS.values())})")


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_every_answer_as_declared(case, server):
    label = f"{case.method} {case.path}"
    COUNTS[label] = COUNTS.get(label, 0) + 1
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"token {server.token}"},
                           checks=CHECKS, timeout=60)
