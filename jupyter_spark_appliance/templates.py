"""Built-in appliance templates: a few parameters in, a full PIVOT document out.

Templates produce plain JSON documents that then go through the same parser as
a user's own document, so a template can never bypass validation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import ui
from .spark.roles import CONNECT_PORT, ROLES
from .spec import ID_PATTERN, MAX_INSTANCES, Problem, SpecError

DEFAULT_IMAGES = {name: role.image for name, role in ROLES.items()}
# Master and workers must agree on it, or healthy workers flap on busy machines.
DEFAULT_SPARK_CONF = {"spark.worker.timeout": "30"}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # JSON Schema type
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"type": self.type, "default": self.default, "description": self.description}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    parameters: tuple[Parameter, ...]
    build: Callable[[dict[str, Any]], dict[str, Any]]

    def to_json(self, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The Template wire shape; ``defaults`` (the server's template_defaults) replace the built-in ones."""
        params = {p.name: p.to_json() for p in self.parameters}
        for key, value in (defaults or {}).items():
            if key in params:
                params[key]["default"] = value
        return {"name": self.name, "description": self.description, "parameters": params}

    def render(self, params: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Validate ``params`` (over ``defaults``) and build the appliance document.

        Raises SpecError with one problem per bad parameter, the path being the
        parameter's name as the client sent it.
        """
        known = {p.name: p for p in self.parameters}
        problems = [
            Problem(key, f"unknown parameter for template {self.name!r} (known: {', '.join(known)})")
            for key in params
            if key not in known
        ]
        values: dict[str, Any] = {}
        merged = {**(defaults or {}), **params}
        for p in self.parameters:
            value = merged.get(p.name, p.default)
            problem = _check_parameter(p, value)
            if problem:
                problems.append(problem)
            values[p.name] = value
        if problems:
            raise SpecError(problems)
        return self.build(values)


def _check_parameter(p: Parameter, value: Any) -> Problem | None:
    if p.type in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Problem(p.name, f"must be {'an integer' if p.type == 'integer' else 'a number'}")
        if p.type == "integer" and isinstance(value, float) and not value.is_integer():
            return Problem(p.name, f"must be an integer, not {value}")
        if p.minimum is not None and value < p.minimum:
            return Problem(p.name, f"must be at least {p.minimum:g}, not {value}")
        if p.maximum is not None and value > p.maximum:
            return Problem(p.name, f"must be at most {p.maximum:g}, not {value}")
    elif p.type == "boolean":
        if not isinstance(value, bool):
            return Problem(p.name, "must be true or false")
    elif p.type == "string":
        if not isinstance(value, str):
            return Problem(p.name, "must be a string")
        if p.name == "id" and not ID_PATTERN.fullmatch(value):
            return Problem(p.name, f"{value!r} must match [a-zA-Z0-9-]+")
    elif p.type == "object":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return Problem(p.name, "must be an object of strings")
    return None


def _java_opts(conf: Mapping[str, str]) -> str:
    """Render Spark conf as -D options for SPARK_*_OPTS.

    spark-class's launcher splits these with its own quote-aware parser (no
    shell is involved), so double quotes protect values with spaces.
    """
    parts = []
    for key, value in conf.items():
        opt = f"-D{key}={value}"
        if any(ch.isspace() for ch in opt):
            opt = '"' + opt.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(opt)
    return " ".join(parts)


def _spark_livy(v: dict[str, Any]) -> dict[str, Any]:
    images = {**DEFAULT_IMAGES, **v["images"]}
    daemon_opts = _java_opts({**DEFAULT_SPARK_CONF, **v["spark_conf"]})
    # Every UI is served under the Jupyter server's URL (ui.py): the roles set Spark's reverse proxy to it.
    prefix = {ui.UI_PREFIX_ENV: ui.spark_ui_prefix(v["id"])}
    doc: dict[str, Any] = {
        "id": v["id"],
        "containers": [
            {
                "id": "livy",
                "type": "service",
                "image": images["livy"],
                "resources": {"cpus": 1, "mem": v["livy_memory"]},
                "network_mode": "container",
                "ports": [{"container_port": 8998, "name": "livy"}],
                "args": ["spark://@spark-master:7077", "http://@spark-master:8080"],
                "env": {**prefix, "LIVY_RESOURCE_WAIT_LIMIT": str(v["resource_wait_limit"])},
                "dependencies": ["spark-master"],
            },
            {
                "id": "spark-master",
                "type": "service",
                "image": images["spark-master"],
                "resources": {"cpus": 1, "mem": v["master_memory"]},
                "network_mode": "container",
                "ports": [
                    {"container_port": 8080, "name": "spark-ui"},
                    {"container_port": 7077, "name": "spark"},
                ],
                "env": {"SPARK_MASTER_OPTS": daemon_opts, **prefix},
            },
            {
                "id": "spark-worker",
                "type": "service",
                "image": images["spark-worker"],
                "instances": v["workers"],
                "resources": {"cpus": v["worker_cores"], "mem": v["worker_memory"]},
                "network_mode": "container",
                "args": ["@spark-master:7077"],
                "env": {"SPARK_WORKER_OPTS": daemon_opts, **prefix},
                "dependencies": ["spark-master"],
            },
        ],
    }
    if v["connect"]:
        doc["containers"].append({
            "id": "spark-connect",
            "type": "service",
            "image": images["spark-connect"],
            "resources": {"cpus": 1, "mem": v["connect_memory"]},
            "network_mode": "container",
            "ports": [{"container_port": CONNECT_PORT, "name": "connect"}],
            "args": ["spark://@spark-master:7077"],
            "env": dict(prefix),
            "dependencies": ["spark-master"],
        })
    return doc


SPARK_LIVY = Template(
    name="spark-livy",
    description="A Spark standalone master, N workers, a Livy endpoint (PIVOT's spark-livy appliance) "
                "and a Spark Connect server.",
    parameters=(
        Parameter("id", "string", "spark-livy", "Appliance id"),
        Parameter("workers", "integer", 1, "Number of Spark workers", minimum=0, maximum=MAX_INSTANCES),
        Parameter("worker_cores", "integer", 1, "Cores each worker offers", minimum=1, maximum=256),
        Parameter("worker_memory", "integer", 1024, "Memory each worker offers (MB)", minimum=256),
        Parameter("master_memory", "integer", 1024, "Memory of the master (MB)", minimum=128),
        Parameter("livy_memory", "integer", 2048, "Memory of the Livy endpoint (MB)", minimum=256),
        Parameter("resource_wait_limit", "integer", 30,
                  "Seconds a Livy statement waits for cluster resources before it ends with an error "
                  "saying so (0: wait as long as it takes)", minimum=0, maximum=86400),
        Parameter("connect", "boolean", True, "Spark Connect server (sc://localhost:PORT, with a token)"),
        Parameter("connect_memory", "integer", 1024, "Memory of the Spark Connect server's driver (MB)",
                  minimum=512),
        Parameter("images", "object", {}, "Images by role: spark-master, spark-worker, livy, spark-connect"),
        Parameter("spark_conf", "object", {}, "Spark settings for master and workers"),
    ),
    build=_spark_livy,
)

TEMPLATES: dict[str, Template] = {t.name: t for t in (SPARK_LIVY,)}


def list_templates(defaults: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [t.to_json((defaults or {}).get(t.name)) for t in TEMPLATES.values()]


def render_template(
    name: str, params: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    template = TEMPLATES.get(name)
    if template is None:
        raise SpecError([Problem("template", f"unknown template {name!r} (known: {', '.join(TEMPLATES)})")])
    return template.render(params, defaults)
