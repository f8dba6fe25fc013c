"""The PIVOT appliance parser: the original document, every rule, and fuzzing."""

from __future__ import annotations

import copy
import json
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_spark_appliance.graph import find_cycle
from jupyter_spark_appliance.plan import address_map_resolver, resolve_container, start_order, stop_order
from jupyter_spark_appliance.spec import SpecError, parse_appliance
from jupyter_spark_appliance.templates import list_templates, render_template

PIVOT_TEXT = (Path(__file__).parent / "data" / "pivot-spark-livy.json").read_text()
FIXED_TEXT = PIVOT_TEXT.replace('{ "container_port": 8080 }\n', '{ "container_port": 8080 },\n')
SCHEMA = json.loads(files("jupyter_spark_appliance").joinpath("schema/appliance.schema.json").read_text())


def problems(doc) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_appliance(doc)
    return {p.path: p.message for p in info.value.problems}


def valid() -> dict:
    return json.loads(FIXED_TEXT)


def test_pivot_document_parses_once_its_comma_is_fixed():
    app = parse_appliance(FIXED_TEXT)
    assert app.id == "spark-livy"
    assert [c.id for c in app.containers] == ["livy", "spark-master", "spark-worker"]
    master = app.container("spark-master")
    assert [p.container_port for p in master.ports] == [8080, 7077]
    assert app.container("spark-worker").references == ("spark-master",)
    assert start_order(app)[0] == "spark-master" and stop_order(app)[-1] == "spark-master"
    # canonical form round-trips
    assert parse_appliance(app.to_json()) == app


def test_pivot_original_text_fails_at_the_missing_comma():
    with pytest.raises(SpecError) as info:
        parse_appliance(PIVOT_TEXT)
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (32, 17)
    assert "delimiter" in problem.message
    assert problem.to_json() == {"path": "$", "message": problem.message, "line": 32, "column": 17}


RULES = [
    # (mutation, expected path, words in the message)
    (lambda d: d.pop("id"), "id", "required"),
    (lambda d: d.update(id="bad id!"), "id", "letters, digits and '-'"),
    (lambda d: d.update(id="-leading"), "id", "starting with a letter or digit"),
    (lambda d: d.update(id="x" * 300), "id", "at most 40 characters"),
    (lambda d: d["containers"][0].update(env={"A": "nul\0here"}), "containers[0].env.A", "NUL"),
    (lambda d: d["containers"][0].update(args=["nul\0"]), "containers[0].args[0]", "NUL"),
    (lambda d: d["containers"][0]["resources"].update(cpus=1e-12), "containers[0].resources.cpus", "between 0.01"),
    (lambda d: d["containers"][0]["resources"].update(mem=1e308), "containers[0].resources.mem", "between 1 and"),
    (lambda d: d.update(containers=d["containers"] * 40), "containers", "at most 32 containers"),
    (lambda d: d.update(containers=[]), "containers", "at least one"),
    (lambda d: d.update(extra=1), "extra", "unknown field"),
    (lambda d: d["containers"][0].pop("type"), "containers[0].type", "required"),
    (lambda d: d["containers"][0].update(type="daemon"), "containers[0].type", "not one of"),
    (lambda d: d["containers"][0].update(image=""), "containers[0].image", "empty"),
    (lambda d: d["containers"][1].pop("resources"), "containers[1].resources", "required"),
    (lambda d: d["containers"][2]["resources"].update(mem=-1), "containers[2].resources.mem", "greater than 0"),
    (lambda d: d["containers"][2]["resources"].update(cpus="4"), "containers[2].resources.cpus", "number"),
    (lambda d: d["containers"][0].update(cmd="x"), "containers[0]", "not both"),
    (lambda d: d["containers"][2].update(env={"A": 8}), "containers[2].env.A", "string"),
    (lambda d: d["containers"][1].update(network_mode="overlay"), "containers[1].network_mode", "not one of"),
    (lambda d: d["containers"][1]["ports"].append({"container_port": 70000}),
     "containers[1].ports[2].container_port", "65535"),
    (lambda d: d["containers"][1]["ports"].append({"container_port": 8080}),
     "containers[1].ports[2].container_port", "already declared"),
    (lambda d: d["containers"][1].update(is_privileged="yes"), "containers[1].is_privileged", "true or false"),
    (lambda d: d["containers"][0].update(dependencies=["nope"]), "containers[0].dependencies[0]", "unknown container"),
    (lambda d: d["containers"][1].update(dependencies=["spark-master"]), "containers[1].dependencies[0]", "itself"),
    (lambda d: d["containers"][2].update(instances=-1), "containers[2].instances", "0 or more"),
    (lambda d: d["containers"][2].update(instances=1.5), "containers[2].instances", "integer"),
    (lambda d: d["containers"][1].update(id="livy"), "containers[1].id", "duplicate"),
    (lambda d: d["containers"][2].update(args=["@ghost:7077"]), "containers[2].args[0]", "refers to no container"),
    (lambda d: d["containers"][2].update(args=["@spark-master:9999"]), "containers[2].args[0]", "not a declared"),
    (lambda d: d["containers"][1].update(volumes=[{"src": "/a", "dest": "rel"}]), "containers[1].volumes[0].dest",
     "absolute"),
    (lambda d: d["containers"][1].update(health_check={"port": 1234}), "containers[1].health_check.port",
     "not one of this container's declared ports"),
    (lambda d: d["containers"][0].update(type="job", instances=2), "containers[0].instances", "only services"),
]


@pytest.mark.parametrize("mutate,path,words", RULES, ids=[r[1] + ":" + r[2] for r in RULES])
def test_every_rule_has_a_failing_example(mutate, path, words):
    doc = valid()
    mutate(doc)
    found = problems(doc)
    assert path in found, found
    assert words in found[path]


def test_all_problems_are_reported_at_once():
    doc = valid()
    doc["containers"][0]["resources"]["mem"] = 0
    doc["containers"][2]["image"] = 5
    doc["containers"][1]["ports"][0]["protocol"] = "sctp"
    found = problems(doc)
    assert {"containers[0].resources.mem", "containers[2].image", "containers[1].ports[0].protocol"} <= set(found)


@pytest.mark.parametrize("length", [2, 3, 5])
def test_cycles_of_any_length_are_spelled_out(length):
    ids = [f"c{i}" for i in range(length)]
    doc = {"id": "cyc", "containers": [
        {"id": cid, "type": "service", "image": "x", "resources": {"cpus": 1, "mem": 1},
         "dependencies": [ids[(i + 1) % length]]} for i, cid in enumerate(ids)]}
    message = next(iter(problems(doc).values()))
    assert message == "dependency cycle: " + " -> ".join(ids + [ids[0]])


def test_reference_makes_an_implicit_dependency_and_cycle():
    doc = {"id": "a", "containers": [
        {"id": "x", "type": "service", "image": "i", "resources": {"cpus": 1, "mem": 1}, "env": {"Y": "@y"}},
        {"id": "y", "type": "service", "image": "i", "resources": {"cpus": 1, "mem": 1}, "args": ["@x"]}]}
    assert "x -> y -> x" in next(iter(problems(doc).values()))


def test_reference_resolution_with_ports_and_escapes():
    app = parse_appliance(FIXED_TEXT)
    resolver = address_map_resolver({"spark-master": "127.0.0.1"}, {("spark-master", 7077): 41234})
    assert resolve_container(app.container("livy"), resolver).args == ["spark://127.0.0.1:41234"]
    doc = valid()
    doc["containers"][2]["env"]["MAIL"] = "me\\@example.org @spark-master"
    c = parse_appliance(doc).container("spark-worker")
    assert resolve_container(c, resolver).env["MAIL"] == "me@example.org 127.0.0.1"


def test_pivot_scheduler_hints_are_accepted_with_a_warning():
    doc = valid()
    doc["containers"][0]["force_pull_image"] = True
    assert parse_appliance(doc).warnings == ("containers[0].force_pull_image: ignored (a PIVOT scheduler hint)",)


def test_templates_render_valid_appliances():
    assert [t["name"] for t in list_templates()] == ["spark-livy"]
    app = parse_appliance(render_template("spark-livy", {"workers": 3, "worker_cores": 2}))
    worker = app.container("spark-worker")
    assert worker.instances == 3 and worker.resources.cpus == 2
    assert app.container("livy").all_dependencies == ("spark-master",)
    with pytest.raises(SpecError) as info:
        render_template("spark-livy", {"workers": -1, "bogus": 1})
    assert {p.path for p in info.value.problems} == {"workers", "bogus"}


def test_spark_livy_serves_its_uis_under_the_server_url_and_runs_connect_by_default():
    from jupyter_spark_appliance import ui
    from jupyter_spark_appliance.spark.roles import ROLES, LaunchContext

    ui.configure("/user/alice/")
    try:
        app = parse_appliance(render_template("spark-livy", {"id": "demo"}))
    finally:
        ui.configure("/")
    prefix = "/user/alice/spark-appliance/appliance/demo/sparkui"
    assert {c.id: c.env[ui.UI_PREFIX_ENV] for c in app.containers} == {
        "livy": prefix, "spark-master": prefix, "spark-worker": prefix, "spark-connect": prefix}
    connect = app.container("spark-connect")
    assert connect.image == ROLES["spark-connect"].image and connect.all_dependencies == ("spark-master",)
    assert [p.container_port for p in connect.ports] == [15002]
    without = parse_appliance(render_template("spark-livy", {"connect": False}))
    assert [c.id for c in without.containers] == ["livy", "spark-master", "spark-worker"]
    with pytest.raises(SpecError) as info:
        render_template("spark-livy", {"connect": "yes"})
    assert [(p.path, p.message) for p in info.value.problems] == [("connect", "must be true or false")]

    # The roles turn the prefix into Spark's reverse-proxy settings; Spark refuses "proxy"/"history" in it.
    def command(role: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        ctx = LaunchContext("127.0.0.1", "127.0.0.1", {7077: 1, 8080: 2, 7078: 3, 8081: 4, 8998: 5, 15002: 6},
                            ["spark://127.0.0.1:1"], env, Path("/spark"), "python", 1, 1024, Path("/w"), Path("/l"),
                            secret="s3cret", secret_file=Path("/app/spark-secret"))
        c = ROLES[role].command(ctx)
        return c.argv, c.env

    argv, env = command("spark-master", {ui.UI_PREFIX_ENV: prefix})
    assert f"-Dspark.ui.reverseProxy=true -Dspark.ui.reverseProxyUrl={prefix}" in env["SPARK_MASTER_OPTS"]
    argv, env = command("livy", {ui.UI_PREFIX_ENV: prefix})
    assert argv[argv.index("--conf", argv.index("--username")) + 1:][:3] == [
        "spark.ui.reverseProxy=true", "--conf", f"spark.ui.reverseProxyUrl={prefix}"]
    argv, env = command("spark-connect", {ui.UI_PREFIX_ENV: prefix})
    assert "s3cret" not in " ".join(argv) and env == {"JSA_SPARK_AUTH_SECRET_FILE": "/app/spark-secret"}
    assert "spark.connect.grpc.binding.port=6" in argv and f"spark.ui.reverseProxyUrl={prefix}" in argv
    argv, env = command("spark-master", {ui.UI_PREFIX_ENV: "/user/proxy-admin/spark-appliance/appliance/x/sparkui"})
    assert "reverseProxy" not in env["SPARK_MASTER_OPTS"]


def test_schema_agrees_with_the_parser_on_examples():
    jsonschema.validate(valid(), SCHEMA)
    jsonschema.validate(render_template("spark-livy", {}), SCHEMA)
    for mutate, path, _ in RULES:
        doc = valid()
        mutate(doc)
        if any(w in path for w in ("dependencies", "args", "duplicate")) or path.endswith("].id"):
            continue  # cross-container rules are beyond JSON Schema (its description says so)
        if path.endswith("health_check.port") or "already declared" in problems(doc).get(path, ""):
            continue
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, SCHEMA)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_only_ever_raises_spec_error(value):
    try:
        parse_appliance(value)
    except SpecError:
        pass
    try:
        parse_appliance(json.dumps(value))
    except SpecError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_specs_only_ever_raise_spec_error(data):
    doc = copy.deepcopy(valid())
    for _ in range(data.draw(st.integers(1, 4))):
        container = data.draw(st.sampled_from(doc["containers"]))
        key = data.draw(st.sampled_from(sorted(set(container) | {"instances", "health_check", "volumes", "cmd"})))
        container[key] = data.draw(json_values)
    try:
        app = parse_appliance(doc)
    except SpecError as e:
        assert e.problems and all(p.path and p.message for p in e.problems)
    else:
        assert parse_appliance(app.to_json()) == app


@settings(max_examples=100)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_spec_error(raw):
    try:
        parse_appliance(raw)
    except SpecError:
        pass


def test_find_cycle_ignores_unknown_nodes():
    assert find_cycle({"a": ["b"], "b": ["zzz"]}) is None
