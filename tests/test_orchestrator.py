"""The fast layer: the manager and the orchestrator over a fake backend, in milliseconds.

The fake backend (tests/fakes.py) exists only for this layer; the same
behaviours are proven on real JVMs and a real Docker engine in
test_launch_local.py, test_self_healing.py and test_docker_backend.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from jupyter_spark_appliance import wire
from jupyter_spark_appliance.manager import ApplianceManager, Conflict
from jupyter_spark_appliance.orchestrator import MAX_BACKOFF, backoff
from jupyter_spark_appliance.spec import SpecError
from jupyter_spark_appliance.store import Store

from fakes import FakeBackend, FakeMachine

SPEC = {"id": "app", "containers": [
    {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
     "ports": [{"container_port": 7077}, {"container_port": 8080}]},
    {"id": "livy", "type": "service", "image": "livy", "resources": {"cpus": 1, "mem": 512},
     "ports": [{"container_port": 8998}], "args": ["spark://@spark-master:7077"]},
    {"id": "spark-worker", "type": "service", "image": "spark-worker", "resources": {"cpus": 1, "mem": 512},
     "args": ["@spark-master:7077"], "instances": 2},
]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def machine():
    return FakeMachine()


@pytest.fixture
def clock():
    return Clock()


def make_manager(tmp_path, machine, clock, **kw) -> ApplianceManager:
    kw.setdefault("stop_on_shutdown", False)
    return ApplianceManager(Store(tmp_path), {"fake": lambda: FakeBackend(machine)}, default_backend="fake",
                            monitor_interval=3600, clock=clock, **kw)


async def settle(manager: ApplianceManager, app_id: str = "app") -> None:
    """Run the reconciler until nothing more is under way (what the monitor does every second)."""
    for _ in range(50):
        for task in list(manager._tasks.get(app_id, ())):
            await asyncio.gather(task, return_exceptions=True)
        orch = manager.orchestrators[app_id]
        await orch.reconcile()
        if not orch._starting:
            return
        await asyncio.gather(*orch._starting.values(), return_exceptions=True)
    raise AssertionError("the reconciler did not settle")


def states(manager, cid: str) -> list[str]:
    return [i["state"] for i in next(c for c in manager.model(manager.get("app"))["containers"]
                                     if c["id"] == cid)["instance_states"]]


def container(manager, cid: str) -> dict:
    return next(c for c in manager.model(manager.get("app"))["containers"] if c["id"] == cid)


async def launched(manager) -> None:
    await manager.start()
    await manager.create(SPEC)
    await settle(manager)
    assert manager.get("app").state == "running"


async def test_launch_orders_by_dependency_and_resolves_references(tmp_path, machine, clock):
    manager = make_manager(tmp_path, machine, clock)
    await launched(manager)
    assert machine.starts[0] == "spark-master-0"
    master_rpc = next(p for p in machine.alive("spark-master")).ports[7077]
    assert [p.argv for p in machine.alive("spark-worker")] == [[f"127.0.0.1:{master_rpc}"]] * 2
    assert manager.get("app").roles == {"spark-master": "spark-master", "livy": "livy", "spark-worker": "spark-worker"}
    await manager.shutdown()


async def test_failed_launch_tears_down_and_says_why(tmp_path, machine, clock):
    machine.fail_start.add("spark-worker")
    manager = make_manager(tmp_path, machine, clock)
    await manager.start()
    await manager.create(SPEC)
    await settle(manager)
    record = manager.get("app")
    assert record.state == "failed" and "refused by the fake machine" in record.reason
    assert machine.alive() == []  # the master and livy that had started were stopped
    assert not record.launched
    await manager.shutdown()


async def test_patch_records_desired_at_once_and_the_reconciler_converges(tmp_path, machine, clock):
    manager = make_manager(tmp_path, machine, clock)
    await launched(manager)
    manager.scale("app", "spark-worker", 4)
    assert container(manager, "spark-worker")["instances"] == 4  # what a 202 reply shows
    await settle(manager)
    assert states(manager, "spark-worker") == ["running"] * 4 and len(machine.alive("spark-worker")) == 4
    manager.scale("app", "spark-worker", 1)
    await settle(manager)
    assert states(manager, "spark-worker") == ["running"] and len(machine.alive("spark-worker")) == 1
    # Persisted: a new manager reads the new count.
    assert Store(tmp_path).load_all()[0].desired["spark-worker"] == 1
    await manager.shutdown()


@pytest.mark.parametrize("value, message", [
    (65, "must be at most 64, not 65"), (-1, "must be 0 or more, not -1"), ("2", "must be an integer"),
    (True, "must be an integer"), (2.5, "must be an integer")])
async def test_patch_validation_is_the_spec_rule(tmp_path, machine, clock, value, message):
    manager = make_manager(tmp_path, machine, clock)
    await launched(manager)
    with pytest.raises(SpecError) as info:
        manager.scale("app", "spark-worker", value)
    (problem,) = info.value.problems
    assert problem.path == "instances" and message in problem.message
    assert "containers[2].instances" in problem.message
    await manager.shutdown()


async def test_a_killed_instance_is_replaced_and_counted(tmp_path, machine, clock):
    events: list[tuple[str, str]] = []
    manager = make_manager(tmp_path, machine, clock)
    manager.listeners.append(lambda record, inst, kind: events.append((kind, inst.name if inst else "")))
    await launched(manager)
    victim = machine.alive("spark-worker")[0]
    machine.kill(victim.pid)
    await settle(manager)
    worker = container(manager, "spark-worker")
    assert states(manager, "spark-worker") == ["running", "running"]
    assert worker["restarts"] == 1
    instance = worker["instance_states"][0]
    assert instance["restarts"] == 1 and "SIGKILL" in instance["last_reason"]
    assert ("restart", "spark-worker-0") in events
    assert len(machine.alive("spark-worker")) == 2
    await manager.shutdown()


async def test_a_restarted_master_keeps_its_ports_and_takes_livy_with_it(tmp_path, machine, clock):
    manager = make_manager(tmp_path, machine, clock)
    await launched(manager)
    (master,) = machine.alive("spark-master")
    (livy,) = machine.alive("livy")
    machine.kill(master.pid)
    await settle(manager)
    assert manager.get("app").state == "running"
    (new_master,) = machine.alive("spark-master")
    (new_livy,) = machine.alive("livy")
    assert new_master.pid != master.pid and new_master.ports == master.ports
    assert new_livy.pid != livy.pid and new_livy.ports == livy.ports  # Sparkmagic's URL stays right
    assert container(manager, "livy")["restarts"] == 1 and container(manager, "spark-master")["restarts"] == 1
    assert len(machine.alive("spark-worker")) == 2  # workers reconnect by themselves
    await manager.shutdown()


async def test_a_crash_loop_backs_off_and_shows_why(tmp_path, machine, clock):
    manager = make_manager(tmp_path, machine, clock)
    await launched(manager)
    machine.crash_on_start.add("spark-worker")
    victim = machine.alive("spark-worker")[0]
    machine.kill(victim.pid, "its process exited with code 3")
    delays = []
    for _ in range(10):
        await settle(manager)
        inst = manager.get("app").instances["spark-worker"][0]
        assert inst.state == "pending" and "exited with code" in inst.reason
        delays.append(inst.restart_at - clock.now)
        starts = len(machine.starts)
        await settle(manager)  # not due yet: nothing starts
        assert len(machine.starts) == starts
        clock.now = inst.restart_at
    # The first death restarts at once (it may be a one-off); then 1, 2, 4 ... 60 s.
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert machine.starts.count("spark-worker-0") == 1 + 1 + 9  # launch, at once, then nine backed off
    assert "restarting in 60 s" in manager.get("app").instances["spark-worker"][0].reason
    # The other worker never stopped.
    assert states(manager, "spark-worker")[1] == "running"
    await manager.shutdown()


def test_backoff_is_capped():
    assert [backoff(n) for n in range(1, 10)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff(100) == MAX_BACKOFF


async def test_restart_policy_never_leaves_it_failed_until_a_scale(tmp_path, machine, clock):
    spec = {**SPEC, "containers": [*SPEC["containers"][:2], {**SPEC["containers"][2], "restart": "never"}]}
    manager = make_manager(tmp_path, machine, clock)
    await manager.start()
    await manager.create(spec)
    await settle(manager)
    machine.kill(machine.alive("spark-worker")[0].pid)
    await settle(manager)
    assert states(manager, "spark-worker") == ["failed", "running"]
    assert len(machine.alive("spark-worker")) == 1
    manager.scale("app", "spark-worker", 2)  # how a user replaces it
    await settle(manager)
    assert states(manager, "spark-worker") == ["running", "running"]
    await manager.shutdown()


async def test_server_wide_policy_never(tmp_path, machine, clock):
    manager = make_manager(tmp_path, machine, clock, restart_policy="never")
    await launched(manager)
    machine.kill(machine.alive("spark-master")[0].pid)
    await settle(manager)
    assert manager.get("app").state == "failed"
    await manager.shutdown()


async def test_delete_during_launch_stops_what_started(tmp_path, machine, clock):
    machine.start_delay = 0.2
    manager = make_manager(tmp_path, machine, clock)
    await manager.start()
    await manager.create(SPEC)
    while not machine.starts:  # the master's thread is creating it
        await asyncio.sleep(0.01)
    await manager.delete("app")
    await asyncio.sleep(0.5)  # any start thread still running would have created its process by now
    assert machine.alive() == []
    assert manager.get("app") is None and Store(tmp_path).load_all() == []
    await manager.shutdown()


async def test_changes_during_a_delete_get_a_conflict(tmp_path, machine, clock):
    manager = make_manager(tmp_path, machine, clock)
    await launched(manager)
    machine.start_delay = 0.0
    deleting = asyncio.ensure_future(manager.delete("app"))
    await asyncio.sleep(0)
    with pytest.raises(Conflict):
        manager.scale("app", "spark-worker", 3)
    with pytest.raises(Conflict):
        await manager.delete("app")
    await deleting
    assert machine.alive() == []
    await manager.shutdown()


async def test_a_new_manager_readopts_and_restarts_what_died_meanwhile(tmp_path, machine, clock):
    first = make_manager(tmp_path, machine, clock)
    await launched(first)
    await first.shutdown()  # stop_on_shutdown=False: everything keeps running
    assert len(machine.alive()) == 4
    victim = machine.alive("spark-worker")[1]
    machine.kill(victim.pid)
    second = make_manager(tmp_path, machine, clock)
    await second.start()
    record = second.get("app")
    inst = record.instances["spark-worker"][1]
    assert inst.state == "pending" and "gone while the server was down" in inst.reason
    await settle(second)
    assert record.state == "running" and len(machine.alive()) == 4
    assert record.instances["spark-worker"][1].restarts == 1
    second.scale("app", "spark-worker", 1)
    await settle(second)
    await second.delete("app")
    assert machine.alive() == []
    await second.shutdown()


async def test_an_unreadable_record_is_listed_failed_and_delete_stops_what_it_describes(tmp_path, machine, clock):
    first = make_manager(tmp_path, machine, clock)
    await launched(first)
    await first.shutdown()  # stop_on_shutdown=False: everything keeps running
    path = tmp_path / "app" / "record.json"
    data = json.loads(path.read_text())
    data["document"] = {"id": "app"}  # e.g. a hand edit, or a format this version cannot read
    path.write_text(json.dumps(data))

    second = make_manager(tmp_path, machine, clock)
    await second.start()
    (listed,) = second.list()
    assert listed["id"] == "app" and listed["state"] == "failed" and "cannot be read" in listed["reason"]
    assert wire_errors("Appliance", listed) == []
    with pytest.raises(Conflict, match="cannot read"):
        await second.create(SPEC)  # the id stays taken while its processes may run
    assert len(machine.alive()) == 4
    assert await second.delete("app")
    assert machine.alive() == [] and not (tmp_path / "app").exists()
    await second.create(SPEC)  # and the id is free again
    await settle(second)
    assert second.get("app").state == "running"
    await second.shutdown()


def wire_errors(schema: str, instance) -> list[str]:
    return [e.message for e in wire.validator(schema).iter_errors(instance)]
