"""The wire contract: one definition (wire.py), generated copies that are current, real shapes that fit.

Fast layer: the generated files are compared with what wire.py makes now, and
the models of appliances driven through the fake backend (tests/fakes.py, used
only by the fast layer) in every state a user can see are validated with every
object closed, so a field the model adds without declaring it fails here. The
real server's responses are validated in test_launch_local.py and
test_api_errors.py with the same validators.
"""

from __future__ import annotations

import json

import pytest

from jupyter_spark_appliance import wire
from jupyter_spark_appliance.spec import MAX_INSTANCES
from jupyter_spark_appliance.state import SparkmagicStatus

from fakes import FakeMachine
from test_orchestrator import SPEC, Clock, launched, make_manager, settle


def test_openapi_document_is_generated_from_wire():
    served = json.loads(wire.openapi_path().read_text())
    assert served == wire.openapi_document(served), "run: python -m jupyter_spark_appliance.wire --write"
    assert served["openapi"] == "3.1.0"
    assert served["components"]["schemas"]["Container"]["properties"]["instances"]["maximum"] == MAX_INSTANCES


def test_panel_types_are_generated_from_wire():
    stale = "run: python -m jupyter_spark_appliance.wire --write"
    assert wire.typescript_path().read_text() == wire.typescript(), stale
    assert f"export const MAX_INSTANCES = {MAX_INSTANCES};" in wire.typescript()


def test_every_reference_in_the_openapi_document_resolves():
    doc = json.loads(wire.openapi_path().read_text())
    refs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    names = set(doc["components"]["schemas"])
    assert refs and {r.removeprefix(wire.REF) for r in refs} <= names


def errors(schema: str, instance) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in wire.validator(schema).iter_errors(instance)]


@pytest.mark.parametrize("schema,bad", [
    ("Appliance", {"undeclared": 1}),
    ("Container", {"restarts": "one"}),
])
async def test_the_validator_rejects_undeclared_and_mistyped_fields(schema, bad, tmp_path):
    """Proof the checks below can fail: a real model with one field added or mistyped."""
    manager = make_manager(tmp_path, FakeMachine(), Clock())
    await launched(manager)
    m = manager.model(manager.get("app"))
    await manager.shutdown()
    target = m if schema == "Appliance" else m["containers"][0]
    target.update(bad)
    assert errors("Appliance", m)


async def test_models_in_every_visible_state_fit_the_contract(tmp_path):
    machine, clock = FakeMachine(), Clock()
    manager = make_manager(tmp_path, machine, clock)
    await manager.start()
    record = await manager.create(SPEC)
    seen = [manager.model(record)]  # submitted/pending, right after the POST
    await settle(manager)
    record.sparkmagic = SparkmagicStatus(url="http://127.0.0.1:1", config="/x/config.json", note="restart kernels")
    seen.append(manager.model(record))  # running, Sparkmagic wired
    machine.crash_on_start.add("spark-worker")
    machine.kill(machine.alive("spark-worker")[0].pid)
    await settle(manager)
    clock.now += 1
    await settle(manager)
    seen.append(manager.model(record))  # a worker backing off: pending with restart_at and last_reason
    manager.scale("app", "spark-worker", 3)
    seen.append(manager.model(record))  # the PATCH reply: desired 3 at once
    assert seen[-1]["containers"][2]["instances"] == 3
    for model in seen:
        assert errors("Appliance", model) == [], model
    assert errors("ApplianceList", {"appliances": manager.list()}) == []
    logs = await manager.logs("app", "spark-worker", None, 5)
    assert errors("Logs", {"appliance": "app", "container": "spark-worker", "instances": logs}) == []
    backing_off = next(i for c in seen[2]["containers"] for i in c["instance_states"] if i["restart_at"])
    assert backing_off["state"] == "pending" and backing_off["last_reason"]
    await manager.shutdown()


async def test_the_templates_catalogue_fits_and_carries_the_server_defaults(tmp_path):
    manager = make_manager(tmp_path, FakeMachine(), Clock(), template_defaults={"spark-livy": {"workers": 3}})
    catalogue = await manager.templates_model()
    assert errors("Templates", catalogue) == []
    params = catalogue["templates"][0]["parameters"]
    assert params["workers"]["default"] == 3 and params["workers"]["maximum"] == MAX_INSTANCES
    assert catalogue["backends"] == [{"name": "fake", "available": True, "reason": None}]
    assert catalogue["default_backend"] == "fake" and catalogue["max_instances"] == MAX_INSTANCES
