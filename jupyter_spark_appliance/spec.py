"""Parse and validate PIVOT appliance documents into immutable, typed objects.

Every consumer (orchestrator, backends, REST API, panel, magic) trusts an
:class:`Appliance`, so all checking happens here, once. A user who pastes a
document wants to fix it in one go: :class:`SpecError` carries *all* problems,
each with a JSON path such as ``containers[2].resources.mem``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .graph import find_cycle, format_cycle
from .references import find_references

#: Letters, digits and '-', starting with a letter or digit: what file names, Docker names
#: and host names (``<appliance>-<container>-<n>`` is a container's host name) all accept.
ID_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]*")
#: An id is part of a host name (a DNS label holds 63 characters): keep room for the rest.
MAX_ID_LENGTH = 40
#: Limits on a document that keep one request from exhausting the server (each is a clear 400).
MAX_CONTAINERS = 32
MAX_CPUS = 1024.0  # per container; the backends also cap it at what the machine has
MAX_MEM_MB = 4 * 1024 * 1024.0  # 4 TB per container
MIN_CPUS = 0.01  # below this Docker's nano_cpus rounds to 0, which means "unlimited"
MIN_MEM_MB = 1.0  # never 0 (Docker reads a 0 limit as "unlimited"); the docker backend needs 6
CONTAINER_TYPES = ("service", "job")
NETWORK_MODES = ("host", "bridge", "container")
PROTOCOLS = ("tcp", "udp")
VOLUME_TYPES = ("rw", "ro")
HEALTH_CHECK_TYPES = ("tcp", "http")
RESTART_POLICIES = ("on-failure", "always", "never")
#: One cap on a service's instances, shared by documents, templates, PATCH, OpenAPI and the panel.
MAX_INSTANCES = 64
INSTANCE_STATES = ("submitted", "pending", "staging", "running", "success", "failed", "killed")
TERMINAL_STATES = frozenset({"success", "failed", "killed"})

APPLIANCE_FIELDS = frozenset({"id", "containers"})
CONTAINER_FIELDS = frozenset(
    {
        "id", "type", "image", "resources", "cmd", "args", "env", "volumes", "network_mode",
        "ports", "is_privileged", "dependencies", "instances", "health_check", "restart",
    }
)
# PIVOT documents these scheduler hints; they mean nothing to a single-host backend,
# so they are accepted with a warning instead of rejected.
IGNORED_CONTAINER_FIELDS = frozenset({"force_pull_image", "schedule_hints"})
RESOURCE_FIELDS = frozenset({"cpus", "mem", "disk", "gpu"})
PORT_FIELDS = frozenset({"container_port", "host_port", "protocol", "name"})
VOLUME_FIELDS = frozenset({"src", "dest", "type"})
HEALTH_CHECK_FIELDS = frozenset({"type", "port", "path", "timeout_seconds", "interval_seconds"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (JSON path) and why."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "message": self.message}
        if self.line is not None:
            out["line"], out["column"] = self.line, self.column
        return out

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f" (line {self.line}, column {self.column})"
        return f"{where}: {self.message}"


class SpecError(ValueError):
    """The only exception the parser raises; carries every problem found."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, path: str, message: str) -> SpecError:
        return cls([Problem(path, message)])

    def to_json(self) -> dict[str, Any]:
        return {
            "message": f"invalid appliance: {len(self.problems)} problem(s)",
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True)
class Resources:
    cpus: float
    mem: float  # MB, as PIVOT
    disk: float | None = None
    gpu: int | None = None


@dataclass(frozen=True)
class Port:
    container_port: int
    host_port: int = 0
    protocol: str = "tcp"
    name: str | None = None


@dataclass(frozen=True)
class Volume:
    src: str
    dest: str
    type: str = "rw"


@dataclass(frozen=True)
class HealthCheck:
    type: str  # tcp | http
    port: int  # a declared container_port
    path: str = "/"
    timeout_seconds: float = 180.0
    interval_seconds: float = 0.5


@dataclass(frozen=True)
class Container:
    id: str
    type: str
    image: str
    resources: Resources
    cmd: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    volumes: tuple[Volume, ...] = ()
    network_mode: str = "container"
    ports: tuple[Port, ...] = ()
    is_privileged: bool = False
    dependencies: tuple[str, ...] = ()
    instances: int = 1
    health_check: HealthCheck | None = None
    restart: str | None = None  # on-failure | always | never; None: the server's default for its type

    @property
    def references(self) -> tuple[str, ...]:
        """Ids referenced with ``@id`` in cmd/args/env, in first-seen order."""
        seen: dict[str, None] = {}
        for text in self._reference_texts():
            for ref in find_references(text):
                seen.setdefault(ref.target, None)
        return tuple(seen)

    @property
    def all_dependencies(self) -> tuple[str, ...]:
        """Declared dependencies plus the implicit ones from references."""
        out = dict.fromkeys(self.dependencies)
        out.update(dict.fromkeys(self.references))
        return tuple(out)

    def _reference_texts(self) -> list[str]:
        texts = list(self.args) + list(self.env.values())
        if self.cmd is not None:
            texts.append(self.cmd)
        return texts

    def port(self, container_port: int) -> Port | None:
        return next((p for p in self.ports if p.container_port == container_port), None)


@dataclass(frozen=True)
class Appliance:
    id: str
    containers: tuple[Container, ...]
    warnings: tuple[str, ...] = ()

    def container(self, container_id: str) -> Container | None:
        return next((c for c in self.containers if c.id == container_id), None)

    def to_json(self) -> dict[str, Any]:
        """The canonical document: parsing it again gives an equal Appliance."""
        return {"id": self.id, "containers": [container_to_json(c) for c in self.containers]}


def container_to_json(c: Container) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id,
        "type": c.type,
        "image": c.image,
        "resources": {k: v for k, v in vars(c.resources).items() if v is not None},
        "network_mode": c.network_mode,
        "ports": [{k: v for k, v in vars(p).items() if v is not None} for p in c.ports],
        "env": dict(c.env),
        "dependencies": list(c.dependencies),
        "is_privileged": c.is_privileged,
    }
    if c.cmd is not None:
        out["cmd"] = c.cmd
    else:
        out["args"] = list(c.args)
    if c.volumes:
        out["volumes"] = [vars(v).copy() for v in c.volumes]
    if c.type == "service":
        out["instances"] = c.instances
    if c.health_check is not None:
        out["health_check"] = vars(c.health_check).copy()
    if c.restart is not None:
        out["restart"] = c.restart
    return out


def check_instances(container: Container, value: Any, path: str) -> Problem | None:
    """The rule for a service's instance count, wherever a count comes from (a document or a PATCH)."""
    if container.type != "service":
        return Problem(path, "only services have instances; a job runs once")
    if isinstance(value, bool) or not isinstance(value, int):
        return Problem(path, f"must be an integer, not {_kind(value)}")
    if value < 0:
        return Problem(path, f"must be 0 or more, not {value}")
    if value > MAX_INSTANCES:
        return Problem(path, f"must be at most {MAX_INSTANCES}, not {value}")
    return None


# ----------------------------------------------------------------------------- parsing


def parse_appliance(document: str | bytes | Mapping[str, Any]) -> Appliance:
    """Parse JSON text (or an already-decoded object) into an :class:`Appliance`.

    Raises :class:`SpecError` and nothing else, whatever the input.
    """
    if isinstance(document, (str, bytes, bytearray)):
        document = decode_document(document)
    try:
        return _Validator().appliance(document)
    except SpecError:
        raise
    except RecursionError:
        raise SpecError([Problem("$", "document is nested too deeply")]) from None


def decode_document(text: str | bytes | bytearray) -> Any:
    """JSON text -> object, or SpecError with line and column."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError([Problem("$", f"not UTF-8 text: {e.reason} at byte {e.start}")]) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise SpecError([Problem("$", f"invalid JSON: {e.msg}", e.lineno, e.colno)]) from None
    except RecursionError:
        raise SpecError([Problem("$", "invalid JSON: nested too deeply")]) from None
    except ValueError as e:  # our constant rejection
        raise SpecError([Problem("$", f"invalid JSON: {e}")]) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Validator:
    """Collects problems while building objects; raises once at the end."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    # -- small typed readers; each returns None after recording a problem

    def _number(self, value: Any, path: str, *, positive: bool, integer: bool = False) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be {'an integer' if integer else 'a number'}, not {_kind(value)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(path, "must be a finite number")
            return None
        if integer and isinstance(value, float):
            if not value.is_integer():
                self.fail(path, f"must be an integer, not {value}")
                return None
            value = int(value)
        if positive and value <= 0:
            self.fail(path, f"must be greater than 0, not {value}")
            return None
        if not positive and value < 0:
            self.fail(path, f"must be 0 or more, not {value}")
            return None
        return value

    def _string(self, value: Any, path: str, *, nonempty: bool = True) -> str | None:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_kind(value)}")
            return None
        if nonempty and not value.strip():
            self.fail(path, "must not be empty")
            return None
        return value

    def _id(self, value: Any, path: str) -> str | None:
        text = self._string(value, path)
        if text is not None and len(text) > MAX_ID_LENGTH:
            self.fail(path, f"must be at most {MAX_ID_LENGTH} characters, not {len(text)}")
            return None
        if text is not None and not ID_PATTERN.fullmatch(text):
            self.fail(path, f"{text[:60]!r} must be letters, digits and '-', starting with a letter or digit")
            return None
        return text

    def _no_nul(self, text: str, path: str) -> bool:
        """No process can take a NUL in its argv or environment: say so here, not at start."""
        if "\0" in text:
            self.fail(path, "must not contain a NUL character")
            return False
        return True

    def _choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        text = self._string(value, path)
        if text is None:
            return None
        if text.lower() not in choices:
            self.fail(path, f"{text!r} is not one of {', '.join(choices)}")
            return None
        return text.lower()

    def _object(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, not {_kind(value)}")
            return None
        return value

    def _list(self, value: Any, path: str) -> list[Any] | None:
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {_kind(value)}")
            return None
        return value

    def _unknown(self, obj: dict[str, Any], path: str, allowed: frozenset[str]) -> None:
        prefix = f"{path}." if path else ""
        for key in obj:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.fail(f"{prefix}{key}", f"unknown field {key!r} (allowed: {hint})")

    # -- the document

    def appliance(self, doc: Any) -> Appliance:
        if not isinstance(doc, dict):
            raise SpecError([Problem("$", f"an appliance must be a JSON object, not {_kind(doc)}")])
        self._unknown(doc, "", APPLIANCE_FIELDS)
        app_id = self._id(doc["id"], "id") if "id" in doc else self.fail("id", "is required")
        placed: list[tuple[int, Container]] = []  # (index in the document, container)
        declared_ids: set[str] = set()
        raw = doc.get("containers")
        if raw is None:
            self.fail("containers", "is required")
        elif (items := self._list(raw, "containers")) is not None:
            if not items:
                self.fail("containers", "must list at least one container")
            if len(items) > MAX_CONTAINERS:
                self.fail("containers", f"must list at most {MAX_CONTAINERS} containers, not {len(items)}")
                items = []
            for i, item in enumerate(items):
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    declared_ids.add(item["id"])
                c = self.container(item, f"containers[{i}]")
                if c is not None:
                    placed.append((i, c))
        self._cross_checks(placed, declared_ids)
        if self.problems:
            raise SpecError(self.problems)
        assert app_id is not None
        return Appliance(app_id, tuple(c for _, c in placed), tuple(self.warnings))

    def container(self, raw: Any, path: str) -> Container | None:
        obj = self._object(raw, path)
        if obj is None:
            return None
        before = len(self.problems)
        for key in obj:
            if key in IGNORED_CONTAINER_FIELDS:
                self.warnings.append(f"{path}.{key}: ignored (a PIVOT scheduler hint)")
        self._unknown(obj, path, CONTAINER_FIELDS | IGNORED_CONTAINER_FIELDS)

        def required(key: str) -> Any:
            if key not in obj:
                self.fail(f"{path}.{key}", "is required")
            return obj.get(key)

        cid = self._id(required("id"), f"{path}.id") if "id" in obj else required("id")
        ctype = self._choice(required("type"), f"{path}.type", CONTAINER_TYPES) if "type" in obj else required("type")
        image = self._string(required("image"), f"{path}.image") if "image" in obj else required("image")
        resources = (self.resources(required("resources"), f"{path}.resources") if "resources" in obj
                     else required("resources"))

        cmd = None
        args: tuple[str, ...] = ()
        if "cmd" in obj and "args" in obj:
            self.fail(path, "give either cmd (a string) or args (a list), not both")
        if "cmd" in obj:
            cmd = self._string(obj["cmd"], f"{path}.cmd")
        if "args" in obj and (items := self._list(obj["args"], f"{path}.args")) is not None:
            args = tuple(a for i, a in enumerate(items)
                         if self._string(a, f"{path}.args[{i}]", nonempty=False) is not None
                         and self._no_nul(a, f"{path}.args[{i}]"))

        env: dict[str, str] = {}
        if "env" in obj and (envobj := self._object(obj["env"], f"{path}.env")) is not None:
            for k, v in envobj.items():
                if not k:
                    self.fail(f"{path}.env", "variable names must not be empty")
                elif "=" in k or "\0" in k:
                    self.fail(f"{path}.env.{k}", "variable names must not contain '=' or NUL")
                elif not isinstance(v, str):
                    self.fail(f"{path}.env.{k}", f"must be a string, not {_kind(v)} (quote numbers: \"8\")")
                elif self._no_nul(v, f"{path}.env.{k}"):
                    env[k] = v

        volumes = self.volumes(obj["volumes"], f"{path}.volumes") if "volumes" in obj else ()
        network_mode = "container"
        if "network_mode" in obj:
            network_mode = self._choice(obj["network_mode"], f"{path}.network_mode", NETWORK_MODES) or network_mode
        ports = self.ports(obj["ports"], f"{path}.ports") if "ports" in obj else ()

        privileged = False
        if "is_privileged" in obj:
            if not isinstance(obj["is_privileged"], bool):
                self.fail(f"{path}.is_privileged", f"must be true or false, not {_kind(obj['is_privileged'])}")
            else:
                privileged = obj["is_privileged"]

        deps: list[str] = []
        if "dependencies" in obj and (items := self._list(obj["dependencies"], f"{path}.dependencies")) is not None:
            for i, d in enumerate(items):
                if (dep := self._id(d, f"{path}.dependencies[{i}]")) is not None and dep not in deps:
                    deps.append(dep)

        instances = 1
        if "instances" in obj:
            if ctype == "job":
                self.fail(f"{path}.instances", "only services have instances; a job runs once")
            else:
                n = self._number(obj["instances"], f"{path}.instances", positive=False, integer=True)
                if n is not None and n > MAX_INSTANCES:
                    self.fail(f"{path}.instances", f"must be at most {MAX_INSTANCES}, not {n}")
                instances = n if n is not None else 1

        restart = None
        if "restart" in obj:
            restart = self._choice(obj["restart"], f"{path}.restart", RESTART_POLICIES)

        health = None
        if "health_check" in obj:
            health = self.health_check(obj["health_check"], f"{path}.health_check", ports)

        if len(self.problems) > before:
            return None
        return Container(
            id=cid, type=ctype, image=image, resources=resources, cmd=cmd, args=args,
            env=MappingProxyType(env), volumes=volumes, network_mode=network_mode, ports=ports,
            is_privileged=privileged, dependencies=tuple(deps), instances=instances, health_check=health,
            restart=restart,
        )

    def resources(self, raw: Any, path: str) -> Resources | None:
        obj = self._object(raw, path)
        if obj is None:
            return None
        self._unknown(obj, path, RESOURCE_FIELDS)
        values: dict[str, Any] = {}
        bounds = {"cpus": (MIN_CPUS, MAX_CPUS, ""), "mem": (MIN_MEM_MB, MAX_MEM_MB, " MB")}
        for key in ("cpus", "mem"):
            if key not in obj:
                self.fail(f"{path}.{key}", "is required")
                continue
            value = self._number(obj[key], f"{path}.{key}", positive=True)
            low, high, unit = bounds[key]
            if value is not None and not low <= value <= high:
                # .10g: 4194304 MB and 4194305 stay readable (:g would print both as 4.1943e+06).
                self.fail(f"{path}.{key}", f"must be between {low:.10g} and {high:.10g}{unit}, not {value:.10g}")
                value = None
            values[key] = value
        if "disk" in obj:
            values["disk"] = self._number(obj["disk"], f"{path}.disk", positive=False)
        if "gpu" in obj:
            values["gpu"] = self._number(obj["gpu"], f"{path}.gpu", positive=False, integer=True)
        if any(values.get(k) is None for k in ("cpus", "mem")):
            return None
        return Resources(**values)

    def ports(self, raw: Any, path: str) -> tuple[Port, ...]:
        items = self._list(raw, path)
        if items is None:
            return ()
        out: list[Port] = []
        seen: dict[tuple[int, str], int] = {}
        for i, item in enumerate(items):
            p = f"{path}[{i}]"
            obj = self._object(item, p)
            if obj is None:
                continue
            self._unknown(obj, p, PORT_FIELDS)
            if "container_port" not in obj:
                self.fail(f"{p}.container_port", "is required")
                continue
            cport = self._port_number(obj["container_port"], f"{p}.container_port", allow_zero=False)
            hport = self._port_number(obj.get("host_port", 0), f"{p}.host_port", allow_zero=True)
            proto = self._choice(obj.get("protocol", "tcp"), f"{p}.protocol", PROTOCOLS)
            name = self._string(obj["name"], f"{p}.name") if "name" in obj else None
            if cport is None or hport is None or proto is None or ("name" in obj and name is None):
                continue
            if (cport, proto) in seen:
                self.fail(f"{p}.container_port", f"{cport}/{proto} is already declared at {path}[{seen[cport, proto]}]")
                continue
            seen[cport, proto] = i
            out.append(Port(cport, hport, proto, name))
        return tuple(out)

    def _port_number(self, value: Any, path: str, *, allow_zero: bool) -> int | None:
        n = self._number(value, path, positive=not allow_zero, integer=True)
        if n is not None and n > 65535:
            self.fail(path, f"must be at most 65535, not {n}")
            return None
        return n

    def volumes(self, raw: Any, path: str) -> tuple[Volume, ...]:
        items = self._list(raw, path)
        if items is None:
            return ()
        out = []
        for i, item in enumerate(items):
            p = f"{path}[{i}]"
            obj = self._object(item, p)
            if obj is None:
                continue
            self._unknown(obj, p, VOLUME_FIELDS)
            src = self._string(obj.get("src"), f"{p}.src") if "src" in obj else self.fail(f"{p}.src", "is required")
            dest = (self._string(obj.get("dest"), f"{p}.dest") if "dest" in obj
                    else self.fail(f"{p}.dest", "is required"))
            vtype = self._choice(obj.get("type", "rw"), f"{p}.type", VOLUME_TYPES)
            if src is not None and dest is not None and vtype is not None:
                if not dest.startswith("/"):
                    self.fail(f"{p}.dest", f"must be an absolute path inside the container, not {dest!r}")
                else:
                    out.append(Volume(src, dest, vtype))
        return tuple(out)

    def health_check(self, raw: Any, path: str, ports: tuple[Port, ...]) -> HealthCheck | None:
        obj = self._object(raw, path)
        if obj is None:
            return None
        before = len(self.problems)
        self._unknown(obj, path, HEALTH_CHECK_FIELDS)
        htype = self._choice(obj.get("type", "tcp"), f"{path}.type", HEALTH_CHECK_TYPES)
        if "port" not in obj:
            self.fail(f"{path}.port", "is required (one of the container's container_port values)")
            port = None
        else:
            port = self._port_number(obj["port"], f"{path}.port", allow_zero=False)
            if port is not None and all(p.container_port != port for p in ports):
                self.fail(f"{path}.port", f"{port} is not one of this container's declared ports")
        hpath = "/"
        if "path" in obj and (text := self._string(obj["path"], f"{path}.path")) is not None:
            if not text.startswith("/"):
                self.fail(f"{path}.path", f"must start with '/', not {text!r}")
            hpath = text
        extra = {}
        for key in ("timeout_seconds", "interval_seconds"):
            if key in obj:
                extra[key] = self._number(obj[key], f"{path}.{key}", positive=True)
        if len(self.problems) > before:
            return None
        return HealthCheck(type=htype, port=port, path=hpath, **extra)

    # -- rules that span containers

    def _cross_checks(self, placed: list[tuple[int, Container]], declared_ids: set[str]) -> None:
        """Rules spanning containers, checked on those that parsed.

        Ids of containers that failed their own checks still count as defined, so
        one bad container does not cascade into "unknown container" noise.
        """
        first: dict[str, int] = {}
        for i, c in placed:
            if c.id in first:
                self.fail(f"containers[{i}].id", f"duplicate container id {c.id!r} (also containers[{first[c.id]}])")
            else:
                first[c.id] = i
        by_id = {c.id: c for _, c in placed}
        for i, c in placed:
            for j, dep in enumerate(c.dependencies):
                if dep == c.id:
                    self.fail(f"containers[{i}].dependencies[{j}]", "a container cannot depend on itself")
                elif dep not in declared_ids:
                    self.fail(f"containers[{i}].dependencies[{j}]", f"unknown container {dep!r}")
            self._check_references(c, i, by_id, declared_ids)
        if self.problems:
            return  # a cycle is only meaningful once every edge is valid
        cycle = find_cycle({c.id: c.all_dependencies for _, c in placed})
        if cycle:
            self.fail(f"containers[{first[cycle[0]]}].dependencies", f"dependency cycle: {format_cycle(cycle)}")

    def _check_references(
        self, c: Container, i: int, by_id: dict[str, Container], declared_ids: set[str]
    ) -> None:
        located: list[tuple[str, str]] = [(f"containers[{i}].args[{j}]", a) for j, a in enumerate(c.args)]
        located += [(f"containers[{i}].env.{k}", v) for k, v in c.env.items()]
        if c.cmd is not None:
            located.append((f"containers[{i}].cmd", c.cmd))
        for path, text in located:
            for ref in find_references(text):
                target = by_id.get(ref.target)
                if ref.target not in declared_ids:
                    self.fail(path, f"@{ref.target} refers to no container of this appliance "
                                    "(write \\@ for a literal @)")
                elif ref.target == c.id:
                    self.fail(path, f"@{ref.target} refers to the container itself")
                elif target is not None and ref.port is not None and target.port(ref.port) is None:
                    declared = ", ".join(str(p.container_port) for p in target.ports) or "none"
                    self.fail(path, f"@{ref.target}:{ref.port}: {ref.port} is not a declared container_port "
                                    f"of {ref.target!r} (declared: {declared})")
