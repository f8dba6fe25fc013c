"""A data dir that fills up, for real: a tiny tmpfs, filled until the kernel says ENOSPC.

The writes fail for real; the processes are the fast layer's fake backend
(tests/fakes.py, used only by tests), since what is under test is the
manager's handling of a record it cannot write, not a JVM. Needs root (to
mount the tmpfs), as CI is; elsewhere it skips.
"""

from __future__ import annotations

import pytest

from jupyter_spark_appliance.manager import ApplianceManager, StorageError, TooMany
from jupyter_spark_appliance.store import Store

from fakes import FakeBackend, FakeMachine
from test_orchestrator import SPEC, Clock, settle


def fill(directory) -> None:
    """Write until the file system refuses: ENOSPC for real."""
    with open(directory / f"ballast-{len(list(directory.glob('ballast*')))}", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


async def test_a_full_disk_never_stops_a_teardown_and_a_launch_starts_nothing(tiny_disk):
    machine = FakeMachine()
    manager = ApplianceManager(Store(tiny_disk), {"fake": lambda: FakeBackend(machine)}, default_backend="fake",
                               monitor_interval=3600, clock=Clock(), stop_on_shutdown=True)
    await manager.start()
    await manager.create(SPEC)
    await settle(manager)
    assert manager.get("app").state == "running" and machine.alive()
    fill(tiny_disk)
    with pytest.raises(OSError):  # it is full for real
        (tiny_disk / "probe").write_bytes(b"x" * 65536)

    # Every state change of the teardown fails to be written; it still stops everything.
    assert await manager.delete("app")
    assert machine.alive() == [] and manager.get("app") is None

    fill(tiny_disk)  # the teardown freed the appliance's dir: full again
    started = len(machine.starts)
    with pytest.raises(StorageError, match="cannot write the appliance's record"):
        await manager.create({**SPEC, "id": "second"})
    assert len(machine.starts) == started and not (tiny_disk / "second").exists()

    # Room again: the same id can be launched (nothing of the failed try blocks it).
    for ballast in tiny_disk.glob("ballast*"):
        ballast.unlink()
    await manager.create({**SPEC, "id": "second"})
    await settle(manager, "second")
    assert manager.get("second").state == "running"
    await manager.shutdown()
    assert machine.alive() == []


async def test_the_server_caps_how_many_appliances_it_runs(tmp_path):
    machine = FakeMachine()
    manager = ApplianceManager(Store(tmp_path), {"fake": lambda: FakeBackend(machine)}, default_backend="fake",
                               monitor_interval=3600, clock=Clock(), max_appliances=2)
    await manager.start()
    for n in (1, 2):
        await manager.create({**SPEC, "id": f"app{n}"})
    with pytest.raises(TooMany, match="max_appliances = 2"):
        await manager.create({**SPEC, "id": "app3"})
    assert not (tmp_path / "app3").exists()
    await manager.delete("app1")
    await manager.create({**SPEC, "id": "app3"})  # room again
    await manager.shutdown()
