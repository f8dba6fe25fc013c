"""The Jupyter server extension: configuration (traitlets) and wiring.

``c.SparkApplianceApp.backend = "docker"`` and friends live here, one trait
per user-facing knob, each with help text shown by ``jupyter server --help-all``.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import sys
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Tuple, Unicode, default

from . import __version__, ui
from .backends.docker import DockerBackend, DockerConfig
from .backends.local import LocalBackend, LocalConfig
from .backends.swarm import SwarmBackend, SwarmConfig
from .handlers import default_handlers
from .manager import ApplianceManager
from .orchestrator import RESTART_POLICIES
from .spark.cds import FAST_DAEMON_JAVA_OPTS, ClassDataSharing
from .spark.cds_recording import record_archives
from .spark.home import SparkNotFound, find_spark_home
from .spark.ports import reachable_host
from .spark.reaper import Reaper
from .spark.roles import DEFAULT_ROLE_PATTERNS
from .sparkmagic_wiring import SparkmagicWiring
from .store import Store


class SparkApplianceApp(ExtensionApp):
    name = "jupyter_spark_appliance"
    description = "Launch a Spark cluster with a Livy endpoint, wired into Sparkmagic."
    version = __version__
    load_other_extensions = True

    backend = CaselessStrEnum(
        ["local", "docker", "swarm"], default_value="local", config=True,
        help="Backend used when a launch request names none: 'local' runs Spark JVMs as processes "
             "on this machine; 'docker' runs containers on the Docker engine; 'swarm' runs one Docker "
             "Swarm service per instance (the engine must be a swarm manager).",
    )
    swarm_registry = Unicode(
        "", config=True,
        help="Registry (HOST:PORT, e.g. 127.0.0.1:5000) the swarm backend takes the project's images "
             "from, pinned by digest; needed on more than one node (push them with `python -m "
             "jupyter_spark_appliance.backends.swarm push-images --registry HOST:PORT`). Empty: every "
             "node runs the images built on it (enough for a single-node swarm).",
    )
    bind_host = Unicode(
        "127.0.0.1", config=True,
        help="Address that Spark, Livy and published container ports bind to. Anything but "
             "loopback exposes the cluster to the network: only change it on a trusted network.",
    )
    connect_host = Unicode(
        "", config=True,
        help="Host name reported in endpoints (what browsers and kernels connect to). "
             "Default: bind_host, or 127.0.0.1 when bind_host is 0.0.0.0. The local backend's "
             "processes reach each other at the bind address itself, not at this name.",
    )
    port_range = Tuple(
        Int(), Int(), default_value=(0, 0), config=True,
        help="Inclusive range of host ports to allocate from, e.g. (20000, 20999). "
             "(0, 0) lets the operating system pick free ports.",
    )
    spark_home = Unicode(
        "", config=True,
        help="Spark installation for the local backend. Default: $SPARK_HOME, else the installed pyspark.",
    )
    livy_home = Unicode(
        config=True,
        help="A real Apache Livy installation to run for livy containers on the local backend "
             "(default: $LIVY_HOME). Empty runs the project's own Livy-compatible gateway.",
    )
    local_roles = Dict(
        default_value=dict(DEFAULT_ROLE_PATTERNS), config=True,
        help="Regular expression (matched against a container's image, then its id) -> local role "
             "(spark-master, spark-worker, livy, spark-connect). Decides how the local backend runs a container.",
    )
    daemon_java_opts = Unicode(
        FAST_DAEMON_JAVA_OPTS, config=True,
        help="SPARK_DAEMON_JAVA_OPTS for local master and worker JVMs (short-lived daemons start "
             "faster with the C1 compiler and the serial collector).",
    )
    class_data_sharing = Bool(
        True, config=True,
        help="Start local masters, workers, Livy drivers and their executors from class-data-sharing "
             "archives, one per role, Spark version and JDK (recorded in the background, see prepare_cds, "
             "or by the first master and worker when they stop): daemons start about twice as fast.",
    )
    cds_dir = Unicode(
        config=True, help="Where class-data-sharing archives live (default: next to data_dir).",
    )
    prepare_cds = Bool(
        True, config=True,
        help="When the server starts and the archives are missing, record them in the background with a "
             "throwaway master, worker and PySpark application at nice 19, so that even the first launch "
             "and its first Livy session start fast.",
    )
    template_defaults = Dict(
        default_value={}, config=True,
        help="Default parameters per template, e.g. {'spark-livy': {'workers': 2, 'worker_memory': 2048}}.",
    )
    restart_policy = CaselessStrEnum(
        list(RESTART_POLICIES), default_value="on-failure", config=True,
        help="What happens to a service instance that dies (a JVM killed, a container that exits), unless "
             "its container says otherwise in the spec's 'restart' field: 'on-failure' restarts it unless it "
             "exited with status 0, 'always' restarts it, 'never' leaves it failed. Restarts back off "
             "1, 2, 4 ... 60 s in a crash loop. Jobs never restart unless their spec says so.",
    )
    start_timeout = Float(
        300.0, config=True,
        help="Seconds a container instance may take to become ready before its launch fails.",
    )
    swarm_reservation = Float(
        1.0, config=True,
        help="Share (0-1] of each container's resources.cpus and mem that the swarm backend reserves on "
             "its node (limits stay the whole value). Swarm places a service only where its reservation "
             "fits: 0.5 lets the default spark-livy template run on a 2-core node.",
    )
    docker_allow_host_network = Bool(
        False, config=True,
        help="Let the docker backend run containers with network_mode 'host'. Off: such specs get a 400, "
             "since the host's network ignores bind_host and exposes every port the container opens.",
    )
    docker_volume_allow = List(
        Unicode(), config=True,
        help="Host paths (and what lies under them) that the docker backend's containers may mount as "
             "volumes, e.g. ['/data/shared']. Empty (the default): no host path. '/', /proc, /sys, /dev, "
             "/etc and the Docker socket are refused whatever this says.",
    )
    max_appliances = Int(
        10, config=True,
        help="Most appliances this server runs at once (each is several JVMs); a launch past it gets a 429 "
             "that says so. 0: no limit.",
    )
    child_env_allow = List(
        Unicode(), config=True,
        help="Names (fnmatch patterns, e.g. 'HADOOP_*') of the server's environment variables that the "
             "processes of local appliances may inherit, besides what Java, Python and the locale need. "
             "Nothing else is passed on (no JUPYTERHUB_API_TOKEN, JPY_*, cloud credentials).",
    )
    log_max_bytes = Int(
        50 * 1024 * 1024, config=True,
        help="Size in bytes past which a local instance's log (logs/<name>.log in its appliance's "
             "directory) is rotated: copied to <name>.log.1 (older copies shift to .2 ...) and truncated, "
             "so a chatty JVM cannot fill the disk. Checked about once a second. 0 = never rotate.",
    )
    log_backups = Int(
        2, config=True,
        help="Rotated copies of a local instance's log kept beside it (<name>.log.1 is the newest); "
             "0 keeps none (the log is only truncated).",
    )
    stop_on_shutdown = Bool(
        True, config=True,
        help="Stop every appliance when the Jupyter server stops. False leaves them running; "
             "the next server re-adopts them.",
    )
    data_dir = Unicode(
        config=True, help="Directory of appliance records, logs and Spark work dirs.",
    )
    allow_privileged = Bool(
        False, config=True,
        help="Let the docker backend run containers that ask for is_privileged. Off: such specs get a 400.",
    )
    docker_leftovers = CaselessStrEnum(
        ["report", "remove"], default_value="report", config=True,
        help="What to do with containers labelled by this extension whose appliance no record knows "
             "(left by a crashed server): 'report' logs them, 'remove' deletes them.",
    )
    event_stream_seconds = Float(
        600.0, config=True,
        help="Seconds after which the server ends an events stream; clients reconnect at once and get "
             "a fresh snapshot (long-lived streams are otherwise cut at random by proxies). 0 = never.",
    )
    write_sparkmagic_config = Bool(
        True, config=True,
        help="Write the Livy endpoint into Sparkmagic's config when an appliance's Livy is running "
             "(and restore the previous endpoint when it is deleted).",
    )

    @default("cds_dir")
    def _default_cds_dir(self) -> str:
        return str(Path(self.data_dir).parent / "cds")

    @default("livy_home")
    def _default_livy_home(self) -> str:
        return os.environ.get("LIVY_HOME", "")

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(Path(jupyter_data_dir()) / "spark_appliance" / "appliances")

    def _connect_host(self) -> str:
        if self.connect_host:
            return self.connect_host
        return reachable_host(self.bind_host)

    def make_local_backend(self) -> LocalBackend:
        config = LocalConfig(
            bind_host=self.bind_host or "127.0.0.1",
            connect_host=self._connect_host(),
            port_range=tuple(self.port_range) if self.port_range[0] else None,  # type: ignore[arg-type]
            spark_home=self.spark_home,
            livy_home=self.livy_home,
            roles=dict(self.local_roles),
            daemon_java_opts=self.daemon_java_opts,
            python=sys.executable,
            cds_dir=Path(self.cds_dir) if self.class_data_sharing else None,
            env_allow=tuple(self.child_env_allow),
            reap_with_server=self.stop_on_shutdown,
            log_max_bytes=max(0, self.log_max_bytes),
            log_backups=max(0, self.log_backups),
        )
        return LocalBackend(config, self.store.dir)

    def make_docker_backend(self) -> DockerBackend:
        config = DockerConfig(
            bind_host=self.bind_host or "127.0.0.1",
            connect_host=self._connect_host(),
            allow_privileged=self.allow_privileged,
            owner=self.manager.owner,
            allow_host_network=self.docker_allow_host_network,
            volume_allow=tuple(self.docker_volume_allow),
            leftovers=self.docker_leftovers,
        )
        # Its client (and so the ping) comes with first use; leftovers are dealt with by
        # after_adoption, once every record is loaded (the manager calls it).
        return DockerBackend(config, self.store.dir)

    def make_swarm_backend(self) -> SwarmBackend:
        config = SwarmConfig(connect_host=self._connect_host(), owner=self.manager.owner,
                             registry=self.swarm_registry, volume_allow=tuple(self.docker_volume_allow),
                             leftovers=self.docker_leftovers, cpu_reservation=self.swarm_reservation,
                             mem_reservation=self.swarm_reservation)
        return SwarmBackend(config, self.store.dir)  # leftovers: after_adoption, once every record is loaded

    def backend_factories(self) -> dict[str, Any]:
        return {"local": self.make_local_backend, "docker": self.make_docker_backend,
                "swarm": self.make_swarm_backend}

    def initialize_settings(self) -> None:
        # UI paths in models (ui.py) are under this server's base URL from the start, so a
        # re-adopted appliance's model is right before the first request sets it too.
        ui.configure(self.serverapp.base_url if self.serverapp else "/")
        self.store = Store(self.data_dir)
        # Stable across restarts (a new port is the same server) and distinct for two servers
        # on one machine or one engine (another user, another data dir).
        owner = f"{getpass.getuser()}@{socket.gethostname()}:{Path(self.data_dir).resolve()}"
        self.manager = ApplianceManager(
            self.store,
            self.backend_factories(),
            default_backend=self.backend,
            template_defaults=self.template_defaults,
            start_timeout=self.start_timeout,
            stop_on_shutdown=self.stop_on_shutdown,
            owner=owner,
            restart_policy=self.restart_policy,
            max_appliances=self.max_appliances,
        )
        if self.write_sparkmagic_config:
            self.manager.listeners.append(SparkmagicWiring())
        self.settings.update({"spark_appliance_manager": self.manager,
                              "spark_appliance_event_stream_seconds": self.event_stream_seconds})

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers())

    _cds_task: asyncio.Future[None] | None = None
    _cds_reaper: Reaper | None = None

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        await self.manager.ensure_started()
        if self.class_data_sharing and self.prepare_cds:
            # The recording's throwaway JVMs are in no record: the reaper stops them when
            # the server stops (stop_extension) or dies.
            self._cds_reaper = Reaper()
            self._cds_task = asyncio.ensure_future(self._prepare_cds())

    async def _prepare_cds(self) -> None:
        try:
            spark_home = find_spark_home(self.spark_home)
        except SparkNotFound:
            return
        cds = ClassDataSharing(Path(self.cds_dir))
        try:
            recorded = await asyncio.to_thread(record_archives, cds, spark_home, self.daemon_java_opts,
                                               Path(self.cds_dir) / "recording", sys.executable,
                                               watch=self._cds_reaper.watch if self._cds_reaper else None)
        except Exception as e:  # noqa: BLE001 - an optimisation: log and carry on without it
            self.log.warning("Could not record class-data-sharing archives: %s", e)
            return
        if recorded:
            self.log.info("Recorded class-data-sharing archives for %s in %s", ", ".join(recorded), self.cds_dir)

    async def stop_extension(self) -> None:
        if self._cds_task is not None:
            self._cds_task.cancel()  # the thread goes on: the reaper stops its JVMs
        if self._cds_reaper is not None:
            await asyncio.to_thread(self._cds_reaper.close)
        await self.manager.shutdown()


launch_new_instance = SparkApplianceApp.launch_instance


def main(argv: list[str] | None = None) -> None:
    """``jupyter-spark-appliance`` (also ``jupyter spark-appliance``).

    ``build-image`` builds the Docker images; anything else starts a Jupyter
    server with the extension.
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["build-image"]:
        from .spark.image import main as build_image

        build_image(args[1:])
    elif args[:1] == ["push-images"]:
        from .backends.swarm import main as swarm_main

        swarm_main(args)
    else:
        launch_new_instance(args)
