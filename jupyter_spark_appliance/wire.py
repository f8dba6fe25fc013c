"""The wire contract, defined once: JSON Schemas of everything the REST routes answer.

``model.py`` builds these shapes; ``openapi.json``'s ``components.schemas`` and
the panel's ``labextension/src/wire.ts`` are *generated* from the definitions
here (``python -m jupyter_spark_appliance.wire --write``), and a test fails
when either is stale or when a real response carries a field not declared
here (every object is ``additionalProperties: false``). Three hand-written
copies had drifted apart before; now there is one.

Schemas are OpenAPI 3.1, i.e. JSON Schema 2020-12, so ``jsonschema`` validates
responses with them as they are.
"""

from __future__ import annotations

import argparse
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from .spec import INSTANCE_STATES, MAX_INSTANCES

REF = "#/components/schemas/"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def obj(properties: dict[str, dict[str, Any]], optional: tuple[str, ...] = (),
        description: str = "") -> dict[str, Any]:
    """A closed object: every property required unless named optional, nothing undeclared."""
    out: dict[str, Any] = {"type": "object", "required": [k for k in properties if k not in optional],
                           "properties": properties, "additionalProperties": False}
    if description:
        out["description"] = description
    return out


STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
STRINGS = {"type": "object", "additionalProperties": STRING}

SCHEMAS: dict[str, dict[str, Any]] = {
    "State": {"type": "string", "enum": list(INSTANCE_STATES),
              "description": "PIVOT's states; a container's and an appliance's are derived from their instances'."},
    "Problem": obj({"path": STRING, "message": STRING, "line": INTEGER, "column": INTEGER},
                   optional=("line", "column"), description="One problem of a request, with its JSON path."),
    "ErrorBody": {"type": "object", "properties": {
        "message": STRING, "reason": nullable(STRING), "problems": array(ref("Problem"))},
        "description": "Any 4xx/5xx body (jupyter_server's shape; 400s add every problem)."},
    "Endpoint": obj({
        "host": STRING, "host_port": INTEGER, "container_port": INTEGER, "protocol": STRING,
        "name": nullable(STRING), "url": STRING, "instance": INTEGER,
        "ui": {"type": "string", "description": "the browser's URL (a path on the Jupyter server, through its "
                                                "authenticated proxy), for UIs and Livy"}},
        optional=("url", "instance", "ui"), description="Where a declared container port is reachable."),
    "InstanceState": obj({
        "index": INTEGER, "name": STRING, "state": ref("State"), "reason": nullable(STRING),
        "restarts": INTEGER, "last_reason": nullable(STRING),
        "restart_at": nullable({"type": "number", "description": "epoch seconds of the next restart, while pending"}),
        "endpoints": array(ref("Endpoint"))}),
    "Resources": obj({"cpus": NUMBER, "mem": NUMBER}),
    "Container": obj({
        "id": STRING, "type": {"type": "string", "enum": ["service", "job"]}, "image": STRING,
        "state": ref("State"),
        "instances": {"type": "integer", "minimum": 0, "maximum": MAX_INSTANCES,
                      "description": "the desired count (a PATCH changes it at once)"},
        "role": nullable({"type": "string", "description": "the Spark role it runs as, or null"}),
        "restarts": INTEGER, "resources": ref("Resources"), "dependencies": array(STRING),
        "endpoints": array(ref("Endpoint")), "instance_states": array(ref("InstanceState"))}),
    "SparkmagicStatus": obj({
        "url": STRING, "config": STRING, "username": STRING, "warning": nullable(STRING),
        "error": nullable(STRING), "note": nullable(STRING)},
        description="Where the appliance pointed Sparkmagic's config."),
    "Appliance": obj({
        "id": STRING, "state": ref("State"), "backend": STRING, "reason": nullable(STRING),
        "created": NUMBER, "template": nullable({"type": "object"}),
        "containers": array(ref("Container")), "links": STRINGS,
        "ui": {**STRINGS, "description": "endpoint name -> the browser's URL through the Jupyter server "
                                         "(spark-ui, livy, worker-ui); links are the raw host:port ones"},
        "warnings": array(STRING),
        "sparkmagic": nullable(ref("SparkmagicStatus")),
        "resources": nullable(ref("Capacity"))}),
    "Capacity": obj({
        "short": BOOLEAN, "message": nullable(STRING), "waiting_sessions": INTEGER,
        "cores_free": nullable(INTEGER), "cores_total": nullable(INTEGER), "checked": NUMBER},
        description="Whether the appliance's Livy statements wait for cores now (asked of its gateway)."),
    "ApplianceList": obj({"appliances": array(ref("Appliance"))}),
    "InstanceLogs": obj({"index": INTEGER, "name": STRING, "state": ref("State"), "lines": array(STRING)}),
    "Logs": obj({"appliance": STRING, "container": STRING, "instances": array(ref("InstanceLogs"))}),
    "Parameter": obj({
        "type": {"type": "string", "enum": ["string", "integer", "number", "boolean", "object"]},
        "default": {}, "description": STRING, "minimum": NUMBER, "maximum": NUMBER},
        optional=("minimum", "maximum"),
        description="A template parameter; default already includes the server's template_defaults."),
    "Template": obj({"name": STRING, "description": STRING,
                     "parameters": {"type": "object", "additionalProperties": ref("Parameter")}}),
    "BackendStatus": obj({"name": STRING, "available": BOOLEAN, "reason": nullable(STRING)}),
    "Templates": obj({
        "templates": array(ref("Template")), "backends": array(ref("BackendStatus")),
        "default_backend": STRING, "max_instances": INTEGER},
        description="Everything a launch form needs: templates, backends, limits."),
    "Credentials": obj({
        "livy": obj({"url": nullable(STRING), "username": STRING, "password": STRING,
                     "auth": {"type": "string", "enum": ["Basic_Access", "None"]}}),
        "spark": obj({"master": nullable(STRING), "conf": STRINGS})},
        description="How to log in to the appliance's Livy gateway (HTTP Basic) and master (spark.authenticate)."),
    "Progress": obj({
        "tasks": INTEGER, "done": INTEGER, "active": INTEGER, "failed": INTEGER,
        "progress": {"type": "number", "minimum": 0, "maximum": 1, "description": "done / tasks (0 when none)"}}),
    "SparkStage": obj({"id": INTEGER, "attempt": INTEGER, "name": STRING, "status": STRING,
                       "progress": ref("Progress")}),
    "SparkJob": obj({"id": INTEGER, "name": STRING, "status": STRING, "progress": ref("Progress"),
                     "stages": array(ref("SparkStage"))},
                    description="A job of an application: RUNNING ones, then the latest finished ones."),
    "SparkApplication": obj({
        "id": STRING, "name": STRING, "state": STRING, "cores": INTEGER,
        "ui": nullable({"type": "string", "description": "its UI through the Jupyter server"}),
        "jobs": array(ref("SparkJob")), "error": nullable(STRING)}),
    "Applications": obj({"appliance": STRING, "applications": array(ref("SparkApplication")),
                         "error": nullable(STRING)},
                        description="The running applications of the appliance's master, with their jobs' progress."),
    "ScaleRequest": obj({"instances": {"type": "integer", "minimum": 0, "maximum": MAX_INSTANCES}}),
}


def validator(name: str):  # noqa: ANN201 - jsonschema is a test/dev dependency
    """A jsonschema validator for one schema, with every $ref resolvable."""
    import jsonschema

    root = {"$defs": {}, **SCHEMAS[name]}
    text = json.dumps(root).replace(REF, "#/$defs/")
    doc = json.loads(text)
    doc["$defs"] = json.loads(json.dumps(SCHEMAS).replace(REF, "#/$defs/"))
    return jsonschema.Draft202012Validator(doc)


# ---------------------------------------------------------------- generators

def openapi_document(current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (the served openapi.json) with its schemas replaced by the ones above."""
    doc = dict(current)
    components = dict(doc.get("components", {}))
    kept = {k: v for k, v in components.get("schemas", {}).items() if k == "CreateRequest"}
    components["schemas"] = {**SCHEMAS, **kept}
    doc["components"] = components
    doc["openapi"] = "3.1.0"
    return doc


def _ts_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"][len(REF):]
    if "anyOf" in schema:
        return " | ".join(_ts_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_ts_type({**schema, "type": k}) for k in kind)
    if kind == "null":
        return "null"
    if kind in ("integer", "number"):
        return "number"
    if kind in ("string", "boolean"):
        return kind
    if kind == "array":
        inner = _ts_type(schema["items"])
        return f"({inner})[]" if "|" in inner else f"{inner}[]"
    if kind == "object":
        if "properties" in schema:
            return "{ " + " ".join(f"{k}{'' if k in schema.get('required', []) else '?'}: {_ts_type(v)};"
                                    for k, v in schema["properties"].items()) + " }"
        extra = schema.get("additionalProperties")
        return f"{{ [key: string]: {_ts_type(extra)} }}" if isinstance(extra, dict) else "Record<string, unknown>"
    return "unknown"


def typescript() -> str:
    """The panel's types (labextension/src/wire.ts), one interface or alias per schema."""
    out = ["// Generated by `python -m jupyter_spark_appliance.wire --write` from wire.py: do not edit.", ""]
    for name, schema in SCHEMAS.items():
        if schema.get("description"):
            out.append(f"/** {schema['description']} */")
        if schema.get("type") == "object" and "properties" in schema:
            out.append(f"export interface {name} {{")
            for key, value in schema["properties"].items():
                opt = "" if key in schema.get("required", []) else "?"
                out.append(f"  {key}{opt}: {_ts_type(value)};")
            out.append("}")
        else:
            out.append(f"export type {name} = {_ts_type(schema)};")
        out.append("")
    out.append(f"export const MAX_INSTANCES = {MAX_INSTANCES};")
    return "\n".join(out) + "\n"


def openapi_path() -> Path:
    return Path(str(files("jupyter_spark_appliance").joinpath("openapi.json")))


def typescript_path() -> Path:
    return Path(__file__).resolve().parent.parent / "labextension" / "src" / "wire.ts"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite openapi.json and labextension/src/wire.ts")
    args = parser.parse_args(argv)
    doc = openapi_document(json.loads(openapi_path().read_text()))
    text = json.dumps(doc, indent=2) + "\n"
    if args.write:
        openapi_path().write_text(text)
        typescript_path().write_text(typescript())
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
