"""Bad input and unauthenticated requests against the real server: clear JSON errors,
no tracebacks, nothing started."""

from __future__ import annotations

import json
from pathlib import Path

from jupyter_spark_appliance import wire
from jupyter_spark_appliance.spec import MAX_INSTANCES

PIVOT_TEXT = (Path(__file__).parent / "data" / "pivot-spark-livy.json").read_text()


async def test_bad_specs_are_400_with_paths(api):
    code, body = await api.call("POST", "appliance", {"id": "x", "containers": [
        {"id": "a", "type": "service", "image": "spark-master", "resources": {"cpus": 0, "mem": 512}}]})
    assert code == 400
    assert body["problems"] == [{"path": "containers[0].resources.cpus", "message": "must be greater than 0, not 0"}]
    assert "traceback" not in json.dumps(body)

    code, body = await api.call("POST", "appliance", raw=PIVOT_TEXT.encode())
    assert code == 400
    assert body["problems"][0]["line"] == 32 and body["problems"][0]["column"] == 17

    code, body = await api.call("POST", "appliance", {"template": "spark-livy", "workers": "two"})
    assert code == 400 and body["problems"][0]["path"] == "workers"
    code, body = await api.call("POST", "appliance", {"template": "nope"})
    assert code == 400 and "unknown template" in body["problems"][0]["message"]
    code, body = await api.call("POST", "appliance", {"template": "spark-livy", "backend": "k8s"})
    assert code == 400 and body["problems"][0]["path"] == "backend"


async def test_every_limit_is_a_400_naming_the_field_over_http(api):
    def doc(**container) -> dict:
        return {"id": "limits", "containers": [{"id": "m", "type": "service", "image": "spark-master",
                                                "resources": {"cpus": 1, "mem": 512}, **container}]}

    many = doc()
    many["containers"] = [{**many["containers"][0], "id": f"m{i}"} for i in range(33)]
    cases = [
        (many, "containers", "must list at most 32 containers, not 33"),
        (doc(instances=65), "containers[0].instances", "must be at most 64, not 65"),
        (doc(resources={"cpus": 0.001, "mem": 512}), "containers[0].resources.cpus",
         "must be between 0.01 and 1024, not 0.001"),
        (doc(resources={"cpus": 1025, "mem": 512}), "containers[0].resources.cpus",
         "must be between 0.01 and 1024, not 1025"),
        (doc(resources={"cpus": 1, "mem": 0.5}), "containers[0].resources.mem",
         "must be between 1 and 4194304 MB, not 0.5"),
        (doc(resources={"cpus": 1, "mem": 4 * 1024 * 1024 + 1}), "containers[0].resources.mem",
         "must be between 1 and 4194304 MB, not 4194305"),
        ({**doc(), "id": "a" * 41}, "id", "must be at most 40 characters, not 41"),
        (doc(id="c" * 41), "containers[0].id", "must be at most 40 characters, not 41"),
    ]
    for body, path, message in cases:
        code, reply = await api.call("POST", "appliance", body)
        assert code == 400 and {"path": path, "message": message} in reply["problems"], (path, reply)
    assert (await api.call("GET", "appliance"))[1] == {"appliances": []}


async def test_the_local_backend_refuses_what_it_cannot_run(api):
    doc = json.loads(PIVOT_TEXT.replace('{ "container_port": 8080 }\n', '{ "container_port": 8080 },\n'))
    # An image no role of the catalogue matches (the seed's sparkmagic one now has a role).
    doc["containers"].append({"id": "rstudio", "type": "service", "image": "rocker/rstudio",
                              "resources": {"cpus": 1, "mem": 2048}, "ports": [{"container_port": 8787}]})
    code, body = await api.call("POST", "appliance", doc)
    assert code == 400
    (problem,) = body["problems"]
    assert problem["path"] == "containers[3].image"
    assert "cannot run 'rocker/rstudio'" in problem["message"]
    assert (await api.call("GET", "appliance"))[1] == {"appliances": []}


async def test_unknown_ids_are_404(api):
    for method, path, body in [("GET", "appliance/ghost", None), ("DELETE", "appliance/ghost", None),
                               ("PATCH", "appliance/ghost/container/w", {"instances": 1}),
                               ("GET", "appliance/ghost/container/w/logs", None),
                               ("GET", "appliance/ghost/ui", None)]:
        code, reply = await api.call(method, path, body)
        assert code == 404, (method, path)
        assert "ghost" in reply["message"]


async def test_no_token_is_403_on_every_route(api):
    for method, path in [("GET", "appliance"), ("POST", "appliance"), ("GET", "templates"),
                         ("GET", "events"), ("DELETE", "appliance/x"), ("GET", "openapi.json")]:
        code, _ = await api.call(method, path, {"template": "spark-livy"} if method == "POST" else None,
                                 headers={"Authorization": ""})
        assert code == 403, (method, path)
    assert (await api.call("GET", "appliance"))[1] == {"appliances": []}


async def test_templates_and_openapi_are_served(api):
    code, body = await api.call("GET", "templates")
    assert code == 200 and body["templates"][0]["name"] == "spark-livy"
    assert body["templates"][0]["parameters"]["workers"]["default"] == 1
    wire.validator("Templates").validate(body)
    assert {b["name"]: b["available"] for b in body["backends"]}["local"] is True
    assert body["default_backend"] == "local" and body["max_instances"] == MAX_INSTANCES
    code, doc = await api.call("GET", "openapi.json")
    assert code == 200 and doc == json.loads(wire.openapi_path().read_text())
    assert {"/appliance", "/appliance/{id}", "/appliance/{id}/container/{cid}", "/templates"} <= set(doc["paths"])
