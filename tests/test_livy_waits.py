"""Fast layer: when the gateway counts a statement as waiting for the cluster (and may give up on it).

Beside the real-component tests (test_short_of_resources.py: a full cluster, a real Sparkmagic
kernel, the give-up and the added worker; test_livy_capacity.py: 40 sessions on one core), these
drive the decision itself with the master statuses that are hard to time for real: a status
polled just before the master granted the free core, and one read that did not answer on a
loaded machine. The driver is a stand-in with the four attributes the decision reads; the
master that does not answer is a real closed port on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from jupyter_spark_appliance.livy.sessions import STATUS_KEPT_FOR, ClusterStatus, GatewayConfig, SessionManager
from jupyter_spark_appliance.spark.ports import allocate_port


def status(cores: int, used: int, apps: list[dict] | None = None, checked: float | None = None) -> ClusterStatus:
    worker = {"state": "ALIVE", "cores": cores, "coresused": used, "memory": 4096, "memoryused": 0}
    return ClusterStatus(cores_total=cores, cores_used=used, workers=[worker], apps=apps or [],
                         checked=time.time() if checked is None else checked)


def manager(tmp_path, master_ui: str = "http://127.0.0.1:9/") -> SessionManager:
    return SessionManager(GatewayConfig(master="spark://127.0.0.1:7077", log_dir=tmp_path, warm=False,
                                        master_ui=master_ui, resource_wait_limit=30))


DRIVER = SimpleNamespace(executors=0, running_tasks=0, app_id="app-1", conf={})


def test_a_free_core_not_yet_granted_is_a_start_and_a_full_cluster_is_a_wait(tmp_path):
    m = manager(tmp_path)
    # Polled before the master granted the free core: the executor is starting.
    m.cluster = status(1, 0, [{"id": "app-1", "name": "livy-gateway-1", "cores": 0}])
    assert m._stall_message(DRIVER) == ("starting an executor: the cluster has a free core for it", False)
    # Granted: still a start.
    m.cluster = status(1, 1, [{"id": "app-1", "name": "livy-gateway-1", "cores": 1}])
    assert m._stall_message(DRIVER) == ("starting an executor: the master granted 1 core", False)
    # The one core is another application's: a wait for the cluster, counted toward the limit.
    m.cluster = status(1, 1, [{"id": "app-1", "name": "livy-gateway-1", "cores": 0},
                              {"id": "app-2", "name": "other", "cores": 1}])
    message, for_cluster = m._stall_message(DRIVER)
    assert for_cluster and message == ("waiting for cluster resources: 0 of 1 core free "
                                       "(held by other: 1 core); scale the workers"), message
    # Cores free but no worker has the memory an executor asks for: a wait too.
    big = SimpleNamespace(**{**vars(DRIVER), "conf": {"spark.executor.memory": "8g"}})
    m.cluster = status(2, 0, [{"id": "app-1", "name": "livy-gateway-1", "cores": 0}])
    message, for_cluster = m._stall_message(big)
    assert for_cluster and "2 of 2 cores free, but no worker has 1 core and 8192 MB free" in message, message


def test_a_master_that_does_not_answer_keeps_the_last_status_for_a_while(tmp_path):
    closed = f"http://127.0.0.1:{allocate_port('127.0.0.1')}/"
    m = manager(tmp_path, closed)
    recent = status(1, 1, [{"id": "app-1", "name": "livy-gateway-1", "cores": 1}], checked=time.time() - 5)
    m.cluster = recent
    asyncio.run(m.refresh_cluster())
    assert m.cluster is recent
    assert m._stall_message(DRIVER) == ("starting an executor: the master granted 1 core", False)
    # Unanswered for longer than STATUS_KEPT_FOR: cores are unknown, and the wait is counted.
    m.cluster = status(1, 1, checked=time.time() - STATUS_KEPT_FOR - 1)
    asyncio.run(m.refresh_cluster())
    assert m.cluster is None
    assert m._stall_message(DRIVER) == ("waiting for cluster resources: no executor yet (the cluster may "
                                        "have no free cores); scale the workers", True)
