"""Every goal of "fast under real use" in one run, each beside its baseline measured in the same run.

One real Jupyter server (local backend unless a row says otherwise) after one
warm-up launch; the measuring functions are the other scripts' (each of which
also runs alone). Each goal row prints ours, the baseline, their ratio, the goal
and whether it is met; tables of detail and the memory each trick costs follow.

    python benchmarks/run_all.py [--quick] [--no-docker] [--no-swarm] [--only PART ...]
                                 [--repeat R] [--markdown docs/performance.md]

A full run (three repetitions) took 26 minutes on 2 cores that a CI run was also using;
``--quick`` (one repetition of everything) takes roughly two thirds of that.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch_docker import measure_docker
from launch_local import first_result_after_launch, livy_client, spark_livy
from launch_swarm import CPUS, measure_swarm
from livy_sessions import cold_session, measure_many_at, measure_scala_at
from scale_workers import describe, measure_scale
from spark_connect import measure_connect

from jupyter_spark_appliance.spark.standalone import start_cluster

from common import (
    DAEMON_OPTS,
    appliance,
    appliance_memory,
    archive_roles,
    archives,
    backend_status,
    hand_run,
    jupyter_server,
    machine,
    median,
)

PARTS = ("startup", "connect", "many", "scala", "scale", "docker", "swarm")
SEED_LIVY_MB, SEED_LIVY_SESSIONS = 4096.0, 6  # the seed's Livy: 6 sessions in 4 GB (a driver JVM each)
RSS_GOAL_MB = 1536.0


@dataclass
class Row:
    """One goal: ours, the baseline (same run), and the rule that says whether it is met."""

    figure: str
    baseline_is: str
    goal: str
    ours: float | None = None
    baseline: float | None = None
    unit: str = "s"
    met: bool | None = None
    skipped: str | None = None
    ours_text: str | None = None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.ours is not None and self.baseline else None

    def cells(self) -> list[str]:
        if self.skipped:
            return [self.figure, self.skipped, self.baseline_is, "-", self.goal, "-"]
        fmt = "{:.0f} MB" if self.unit == "MB" else "{:.2f} s"
        ours = self.ours_text or (fmt.format(self.ours) if self.ours is not None else "-")
        base = f"{fmt.format(self.baseline)} ({self.baseline_is})" if self.baseline is not None else self.baseline_is
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else "-"
        met = "-" if self.met is None else ("yes" if self.met else "NO")
        return [self.figure, ours, base, ratio, self.goal, met]


def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A table as Markdown (the doc) or as aligned columns (the terminal)."""
    if markdown:
        right = ["---:" if rows and all(_numeric(r[i]) for r in rows) else "---" for i in range(len(headers))]
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(right) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])


def _numeric(cell: str) -> bool:
    try:
        float(cell.split()[0])
    except (ValueError, IndexError):
        return cell == "-"
    return True


def ratio_goal(limit: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda ours, base: None if ours is None or not base else ours / base <= limit


def goal_rows(r: dict[str, Any], skipped: dict[str, str]) -> list[Row]:
    """The issue's table, in its order; a part that did not run leaves its rows "skipped: why"."""
    rows: list[Row] = []

    def add(part: str, row: Row, ours: Callable[[], float | None], base: Callable[[], float | None],
            met: Callable[[float | None, float | None], bool | None], text: Callable[[], str] | None = None) -> None:
        if part not in r:
            row.skipped = skipped.get(part, "skipped")
        else:
            row.ours, row.baseline = ours(), base()
            row.met = met(row.ours, row.baseline)
            row.ours_text = text() if text else None
        rows.append(row)

    s, c, m, sc, sw = (r.get(k, {}) for k in ("startup", "connect", "many", "scala", "scale"))
    add("startup", Row("first result right after launch (POST appliance; once it runs, POST /sessions -> its "
                       "first `spark.range(1000).count()`)", "cold in-kernel getOrCreate() + the same count",
                       "<= 0.5x"),
        lambda: s["first_result"], lambda: s["cold_first_result"], ratio_goal(0.5))
    add("startup", Row("cluster ready, 1 worker (POST -> worker ALIVE)", "hand-run `spark-class`, default flags",
                       "<= 0.45x"), lambda: s["workers"], lambda: s["hand_default_workers"], ratio_goal(0.45))
    add("docker", Row("Docker cluster ready, 1 worker", "local backend", "<= 1.3x"),
        lambda: r["docker"]["docker"]["workers"], lambda: r["docker"]["local"]["workers"], ratio_goal(1.3))
    add("swarm", Row(f"Swarm cluster ready, 1 worker (single node, {CPUS:g} CPU per container)",
                     "Docker backend, same document", "<= 1.5x"),
        lambda: r["swarm"]["swarm"]["workers"], lambda: r["swarm"]["docker"]["workers"], ratio_goal(1.5))
    add("many", Row("20 sessions open at once, each having run a statement: total RSS of the appliance",
                    f"seed's Livy: {SEED_LIVY_SESSIONS} sessions in 4 GB, a constant", "<= 1.5 GB", unit="MB"),
        lambda: m["rss_n"], lambda: SEED_LIVY_MB, lambda ours, _: None if ours is None else ours <= RSS_GOAL_MB)
    add("many", Row("200 trivial statements from 20 sessions at once: p95 latency",
                    "one statement alone on an idle session", "all succeed; p95 <= 5x"),
        lambda: m["p95"], lambda: m["alone"],
        lambda ours, base: None if ours is None or not base else (m["ok"] == m["statements"] and ours / base <= 5),
        lambda: f"{m['p95']:.3f} s; {m['ok']:.0f}/{m['statements']:.0f} ok")
    add("scala", Row("Scala session idle, warm (POST -> idle)", "cold spark-shell-style interpreter start",
                     "<= 0.2x"), lambda: sc["warm"], lambda: sc["cold"], ratio_goal(0.2))
    add("connect", Row("Spark Connect first result after launch", "cold in-kernel getOrCreate(), same master",
                       "<= 0.6x"), lambda: c["first_result"], lambda: c["cold_get_or_create"], ratio_goal(0.6))
    add("scale", Row(f"scale 1 -> {int(sw.get('n', 8))} workers (PATCH -> all ALIVE in the master)",
                     "one extra worker (PATCH 1 -> 2)", "<= 2x"),
        lambda: sw["to_n"], lambda: sw["one_extra"], ratio_goal(2.0))
    return rows


def measure_startup(session: Any, base: str, data_dir: Path, cds: Path, repeat: int) -> dict[str, Any]:
    """The local launch rows: launches (each with a Livy session right after) alternating with hand-run JVMs."""
    launches, hands = [], []
    for i in range(repeat):
        launches.append(first_result_after_launch(session, base, data_dir, f"bench-first-{i}"))
        hands.append(hand_run(1, None))
    ours_flags, ours_cds = hand_run(1, DAEMON_OPTS), hand_run(1, DAEMON_OPTS, cds)
    # The cold baseline needs a cluster that already runs: a hand-run one, so that no
    # appliance's idle executor holds its core (dynamic allocation keeps one for 20 s).
    cluster = start_cluster(Path(tempfile.mkdtemp(prefix="jsa-cold-")), workers=1)
    try:
        colds = [cold_session(cluster.master_url, count=1000) for _ in range(repeat)]
    finally:
        cluster.stop()
    keys = ("master", "workers", "livy", "connect", "running", "session_idle", "first_result",
            "launch_to_first_result", "warm_idle", "warm_first_result")
    out: dict[str, Any] = {k: median([x[k] for x in launches]) for k in keys if all(k in x for x in launches)}
    out.update({
        "runs_first_result": [x["first_result"] for x in launches], "runs_workers": [x["workers"] for x in launches],
        "memory": launches[-1]["memory"],
        "hand_default_master": median([h["master"] for h in hands]),
        "hand_default_workers": median([h["workers"] for h in hands]),
        "hand_default_rss": median([h["rss_mb"] for h in hands]),
        "hand_ours_workers": ours_flags["workers"], "hand_ours_rss": ours_flags["rss_mb"],
        "hand_cds_master": ours_cds["master"], "hand_cds_workers": ours_cds["workers"],
        "hand_cds_rss": ours_cds["rss_mb"],
        "cold_get_or_create": median([x["get_or_create"] for x in colds]),
        "cold_first_result": median([x["first_result"] for x in colds]),
        "cds_mb": sum(p.stat().st_size for p in archives(cds)) / 2**20,
    })
    return out


def measure_many_appliance(session: Any, base: str, data_dir: Path, alone_runs: int) -> dict[str, float]:
    """20 sessions and 200 statements on an appliance's own gateway; memory is the whole appliance's."""
    app_id = "bench-many"

    def memory() -> dict[str, float]:
        mem = appliance_memory(data_dir, app_id)
        pss = appliance_memory(data_dir, app_id, pss=True)
        return {"total": sum(v["total"] for v in mem.values()), "pss": sum(v["total"] for v in pss.values()),
                **{cid: v["total"] for cid, v in mem.items()}}

    with appliance(session, base, spark_livy(app_id)):
        livy, http = livy_client(session, base, app_id)
        return measure_many_at(livy, memory, http, alone_runs=alone_runs)


def measure_scala_appliance(session: Any, base: str, data_dir: Path) -> dict[str, float]:
    """Scala sessions on a fresh appliance's gateway (its warm driver); RSS is the gateway's tree."""
    app_id = "bench-scala"
    with appliance(session, base, spark_livy(app_id)):
        livy, http = livy_client(session, base, app_id)
        return measure_scala_at(livy, lambda: appliance_memory(data_dir, app_id)["livy"]["total"], http)


def detail_tables(r: dict[str, Any], repeat: int, md: bool) -> list[str]:
    """What stands behind the goal rows, part by part, for whoever wants to know where the time goes."""
    out: list[str] = []

    def f(x: float | None, unit: str = "") -> str:
        return "-" if x is None else (f"{x:.0f}" if unit == "MB" else f"{x:.2f}")

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}" if a is not None and b else "-"

    if "startup" in r:
        s = r["startup"]
        out += [f"### Start-up, local backend, spark-livy with 1 worker (median of {repeat})", "",
                render(["figure", "ours", "hand-run, default flags", "ratio", "hand-run, our flags + CDS", "ratio"], [
                    ["POST -> master ALIVE", f(s["master"]), f(s["hand_default_master"]),
                     ratio(s["master"], s["hand_default_master"]), f(s["hand_cds_master"]),
                     ratio(s["master"], s["hand_cds_master"])],
                    ["POST -> 1 worker ALIVE (cluster ready)", f(s["workers"]), f(s["hand_default_workers"]),
                     ratio(s["workers"], s["hand_default_workers"]), f(s["hand_cds_workers"]),
                     ratio(s["workers"], s["hand_cds_workers"])],
                    ["POST -> Livy answering", f(s["livy"]), "-", "-", "-", "-"],
                    ["POST -> Spark Connect answering", f(s.get("connect")), "-", "-", "-", "-"],
                    ["POST -> appliance running", f(s["running"]), "-", "-", "-", "-"],
                ], md), "",
                f"Runs (cluster ready): {', '.join(f(x) for x in s['runs_workers'])} s.", "",
                "### A Livy session right after launch (seconds)", "",
                render(["figure", "ours", "baseline", "ratio"], [
                    ["POST /sessions -> idle, right after launch", f(s["session_idle"]),
                     f(s["cold_get_or_create"]) + " (cold getOrCreate)",
                     ratio(s["session_idle"], s["cold_get_or_create"])],
                    ["POST /sessions -> first result, right after launch", f(s["first_result"]),
                     f(s["cold_first_result"]) + " (cold getOrCreate + count)",
                     ratio(s["first_result"], s["cold_first_result"])],
                    ["POST appliance -> first result (launch included)", f(s["launch_to_first_result"]),
                     f(s["cold_first_result"]) + " (cold getOrCreate + count)",
                     ratio(s["launch_to_first_result"], s["cold_first_result"])],
                    ["POST /sessions -> idle, warm driver ready", f(s["warm_idle"]),
                     f(s["cold_get_or_create"]) + " (cold getOrCreate)",
                     ratio(s["warm_idle"], s["cold_get_or_create"])],
                    ["POST /sessions -> first result, warm driver ready", f(s["warm_first_result"]),
                     f(s["cold_first_result"]) + " (cold getOrCreate + count)",
                     ratio(s["warm_first_result"], s["cold_first_result"])],
                ], md), "",
                f"Runs (first result right after launch): {', '.join(f(x) for x in s['runs_first_result'])} s.", ""]
    if "connect" in r:
        c = r["connect"]
        out += [f"### Spark Connect after launch (seconds, median of {repeat})", "",
                render(["figure", "seconds"], [
                    ["client: import + connect (`create()`)", f(c["session"])],
                    ["client: import + connect + `range(1000).count()` (the goal's figure)", f(c["first_result"])],
                    ["the same, with the client's Python starting", f(c["client_wall"])],
                    ["POST appliance -> Connect first result (launch included)", f(c["launch_to_first_result"])],
                    ["baseline: cold in-kernel getOrCreate() on the same master", f(c["cold_get_or_create"])],
                ], md), ""]
    if "many" in r:
        m = r["many"]
        kinds = sorted(k.removeprefix("mem_n_") for k in m if k.startswith("mem_n_") and k not in ("mem_n_total",
                                                                                                    "mem_n_pss"))
        out += [f"### A class at once: {m['sessions']:.0f} sessions on {m['drivers']:.0f} driver(s), one appliance", "",
                render(["figure", "1 session", f"{m['sessions']:.0f} sessions"], [
                    ["RSS of the whole appliance, MB", f(m["rss_1"], "MB"), f(m["rss_n"], "MB")],
                    ["PSS of the whole appliance (shared pages split), MB", f(m["mem_1_pss"], "MB"),
                     f(m["mem_n_pss"], "MB")],
                    *[[f"  {k} (incl. children), MB", f(m.get(f"mem_1_{k}"), "MB"), f(m[f"mem_n_{k}"], "MB")]
                      for k in kinds],
                ], md), "",
                render(["statements", "value"], [
                    ["succeeded", f"{m['ok']:.0f} of {m['statements']:.0f}"],
                    ["p50 / p95 / max latency, s", f"{m['p50']:.3f} / {m['p95']:.3f} / {m['max']:.3f}"],
                    ["one statement alone on an idle session (median), s", f"{m['alone']:.3f}"],
                ], md), ""]
    if "scala" in r:
        sc = r["scala"]
        out += ["### Scala sessions on the warm driver", "",
                render(["figure", "value"], [
                    ["PySpark session POST -> idle, s", f(sc["py_idle"])],
                    ["first Scala session (cold interpreter) POST -> idle, s", f(sc["cold"])],
                    ["next Scala session (warm) POST -> idle, s", f(sc["warm"])],
                    ["RSS a PySpark session adds, MB", f(sc["py_mb"], "MB")],
                    ["RSS the first / next Scala session adds, MB",
                     f"{sc['scala1_mb']:.0f} / {sc['scala2_mb']:.0f}"],
                ], md), ""]
    if "scale" in r:
        sw = r["scale"]
        out += ["### Scaling out (local backend)", "", f"Machine: {describe(sw)}.", "",
                render(["figure", "seconds"], [
                    ["PATCH 1 -> 2 workers -> ALIVE in the master", f(sw["one_extra"])],
                    [f"PATCH 1 -> {int(sw['n'])} workers -> all ALIVE in the master", f(sw["to_n"])],
                    [f"CPU seconds the {int(sw['to_n_cpu_workers'])} new worker JVMs used until ALIVE (one extra: "
                     f"{sw['one_cpu']:.2f})", f(sw["to_n_cpu"])],
                    [f"CPU floor: those CPU seconds / {int(sw['cores'])} cores "
                     f"({ratio(sw['cpu_floor'], sw['one_extra'])}x one extra worker)", f(sw["cpu_floor"])],
                ], md), ""]
    for part, a, b in (("docker", "docker", "local"), ("swarm", "swarm", "docker")):
        if part in r:
            d = r[part]
            note = f" ({CPUS:g} CPU per container: Swarm reserves what a container asks for)" if part == "swarm" else ""
            rows = [[name, f(d[a].get(k)), f(d[b].get(k)), ratio(d[a].get(k), d[b].get(k))]
                    for name, k in (("POST -> master ALIVE", "master"), ("POST -> 1 worker ALIVE", "workers"),
                                    ("POST -> Livy answering", "livy"), ("POST -> Spark Connect answering", "connect"),
                                    ("POST -> appliance running", "running"), ("DELETE -> all stopped", "delete"))
                    if k in d[a]]
            out += [f"### {a.capitalize()} beside {b}{note} (seconds, median of {repeat})", "",
                    render(["figure", a, b, "ratio"], rows, md), "",
                    f"Runs (cluster ready): {a} {', '.join(f(x) for x in d[a]['runs'])}; "
                    f"{b} {', '.join(f(x) for x in d[b]['runs'])} s.", ""]
    return out


def trick_costs(r: dict[str, Any], md: bool) -> list[str]:
    """The memory each trick costs (or saves), where this run measured it."""
    rows: list[list[str]] = []
    s, m, sc, c = (r.get(k) for k in ("startup", "many", "scala", "connect"))
    if s:
        rows.append(["fast daemon flags (`-XX:TieredStopAtLevel=1 -XX:+UseSerialGC`)",
                     f"{s['hand_ours_rss'] - s['hand_default_rss']:+.0f} MB",
                     f"hand-run master + worker RSS: {s['hand_ours_rss']:.0f} MB vs {s['hand_default_rss']:.0f} MB "
                     "with default flags"])
        rows.append(["class-data-sharing archives", f"{s['hand_cds_rss'] - s['hand_ours_rss']:+.0f} MB RSS, "
                     f"{s['cds_mb']:.0f} MB disk", "hand-run master + worker with our flags, with vs without the "
                     "archives (mapped archive pages count in RSS, and are shared between JVMs)"])
        livy = s["memory"].get("livy")
        if livy:
            rows.append(["warm driver (the gateway starts its default driver with itself)",
                         f"{livy['total'] - livy['own']:.0f} MB",
                         f"the gateway's children (driver JVM + its Python) with one session; the gateway itself "
                         f"{livy['own']:.0f} MB"])
        conn = s["memory"].get("spark-connect")
        if conn:
            rows.append(["Spark Connect server on by default", f"{conn['total']:.0f} MB",
                         "its driver JVM, idle (never used)" + (f"; {c['connect_mb']:.0f} MB after a client's count"
                                                               if c else "")])
    if m:
        per = (m["rss_n"] - m["rss_1"]) / max(1, m["sessions"] - 1)
        rows.append(["sessions share drivers", f"{per:.0f} MB per extra session",
                     f"whole appliance, 1 -> {m['sessions']:.0f} sessions ({m['drivers']:.0f} driver(s)); Livy: a "
                     f"driver JVM each, {SEED_LIVY_MB / SEED_LIVY_SESSIONS:.0f} MB per session in the seed's figure"])
    if sc:
        rows.append(["Scala interpreter in the PySpark driver", f"{sc['scala1_mb']:.0f} MB first, "
                     f"{sc['scala2_mb']:.0f} MB each next", f"a PySpark session adds {sc['py_mb']:.0f} MB"])
    rows.append(["readiness from log lines, parallel start, parallel scale-out", "none known",
                 "no process of their own"])
    out = ["### What each trick costs in memory", "", render(["trick", "memory", "measured as"], rows, md), ""]
    if s:
        out += ["### RSS by process kind (the last start-up launch, after its first result)", "",
                render(["process kind", "RSS incl. children, MB", "its own process, MB"],
                       [[k, f"{v['total']:.0f}", f"{v['own']:.0f}"] for k, v in sorted(s["memory"].items())], md), ""]
    return out


NOTES = """## What makes it fast, and how to read the tables

- **JVM flags for short-lived daemons**: `-XX:TieredStopAtLevel=1 -XX:+UseSerialGC`
  (`c.SparkApplianceApp.daemon_java_opts`), heaps from `resources.mem`.
- **Class-data-sharing archives** (`cds.py`, `cds_recording.py`): recorded once per Spark
  version and JDK, in the background when the server starts (a throwaway master, worker and
  PySpark application at nice 19, about a minute), or else by the first master and worker
  when they stop; later JVMs start from them (a master is ALIVE in about 1 s instead of
  about 2; the Livy gateway's drivers and their executors start from theirs through
  `--cds-dir`, and so do the Spark Connect server's: POST -> Connect answering went from
  17.1 s to 8.4 s with it). An executor whose own archive was lost (its worker kills it
  10 s after the recording application ends, often before the archive is written) starts
  from the driver's.
- **Readiness from log lines** (`logwatch.py`, 50 ms): "New state: ALIVE", "Successfully
  registered with master", the gateway's "listening" line, "Spark Connect server started
  at", instead of probing HTTP.
- **Parallel start**: every container starts as soon as its own dependencies run, so the
  workers, Livy and the Spark Connect server start together once the master is ALIVE; a
  scale-out starts all its new workers at once.
- **Warm interpreter**: the Livy gateway starts its default driver with itself (at low
  priority, so it does not slow the workers starting beside it) and sessions share it, so a
  session is idle at once when that driver is ready. Sessions with equal driver settings
  share one driver JVM (Livy starts one per session), which is what keeps 20 sessions small.
  Once a driver has hosted a Scala session it makes the next one ahead (thread,
  SparkSession and interpreter, about 35-60 MB), so the next Scala session is idle at once.
- **Spark Connect**: the spark-livy template also starts a Connect server (`connect`, on by
  default): a client needs no JVM of its own, so a kernel's first result skips the driver's
  start. It holds no executors while idle (dynamic allocation).

How to read them: every baseline is measured in the same run, on the same machine, right
before or after the figure it is compared with; ratios are ours / baseline. "Hand-run"
runs the same `spark-class` JVMs by hand, with Spark's default flags (the goal's baseline)
or with exactly our flags and archives (what the orchestration itself costs). The spark-livy
launches also start the Livy gateway with its warm driver and the Connect server on the
same cores, which the hand-run baseline does not. A session right after launch may wait for
the warm driver that is still starting, and its first result includes starting an executor
(dynamic allocation); its baseline is a fresh Python's `getOrCreate()` and the same count on
a hand-run cluster that already runs (an appliance's idle executor would hold its only core
for 20 s). The Connect baseline is a fresh Python's `getOrCreate()` on the appliance's own
master with the credentials route's settings; both clocks start before PySpark's import.
The 20-session memory is the whole appliance (master, worker with its executors, gateway
with its drivers, Connect server); PSS splits pages that JVMs share (the archives), so it is
nearer to what the machine really spends. The first Scala session of a driver starts the
Scala interpreter the way spark-shell does (cold); the next one was made ahead. The
scale-out's "CPU floor" is the CPU time the new worker JVMs used until they were ALIVE,
divided by the cores: no orchestration can bring 1 -> 8 below it on this machine.

The project's image records all four class-data-sharing archives while it is built
(master, worker, driver, executor), so containers start from them too. What remains of
the gap to local is the engine's own work per container (create, network attach, start)
and the JVM inside a fresh cgroup; Swarm adds scheduling a service per instance.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", help="also write the tables to this file (docs/performance.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one repetition of everything")
    parser.add_argument("--repeat", type=int, default=None, help="launches per start-up figure (default 3; --quick 1)")
    parser.add_argument("--no-docker", action="store_true", help="skip the docker and swarm rows (swarm's baseline "
                                                                 "is the docker backend)")
    parser.add_argument("--no-swarm", action="store_true", help="skip the swarm row")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    alone_runs = 5 if args.quick else 20
    parts = list(args.only or PARTS)
    skipped: dict[str, str] = {p: "skipped: not in --only" for p in PARTS if p not in parts}
    if args.no_docker:
        skipped.update({"docker": "skipped: --no-docker", "swarm": "skipped: --no-docker"})
    if args.no_swarm:
        skipped["swarm"] = "skipped: --no-swarm"
    started, where = time.monotonic(), machine()
    r: dict[str, Any] = {}
    with jupyter_server() as (session, base, tmp):
        data, cds = tmp / "data", tmp / "data" / "spark_appliance" / "cds"
        # Warm-up: the first launch of a server pays for the page cache and its archives'
        # first use; every figure is the steady state after it.
        with appliance(session, base, spark_livy("warmup")):
            pass
        cds_roles = archive_roles(cds)
        status = backend_status(session, base)
        if status.get("docker") and "docker" not in skipped:
            skipped["docker"] = f"skipped: no engine ({status['docker'][:80]})"
        if status.get("swarm") and "swarm" not in skipped:
            skipped["swarm"] = f"skipped: no swarm ({status['swarm'][:80]})"
        if status.get("docker") and "swarm" not in skipped:
            skipped["swarm"] = f"skipped: no engine ({status['docker'][:80]})"
        steps: dict[str, Callable[[], Any]] = {
            "startup": lambda: measure_startup(session, base, data, cds, repeat),
            "connect": lambda: measure_connect(session, base, data, repeat),
            "many": lambda: measure_many_appliance(session, base, data, alone_runs),
            "scala": lambda: measure_scala_appliance(session, base, data),
            "scale": lambda: measure_scale(session, base, 8, 512, settle=2.0 if args.quick else 5.0, data_dir=data),
            "docker": lambda: measure_docker(session, base, repeat),
            "swarm": lambda: measure_swarm(session, base, repeat),
        }
        for part in PARTS:
            if part in skipped:
                continue
            t0 = time.monotonic()
            print(f"[{time.monotonic() - started:6.0f} s] measuring {part} ...", file=sys.stderr, flush=True)
            try:
                r[part] = steps[part]()
            except Exception as e:  # noqa: BLE001 - one part failing must not lose the others' figures
                skipped[part] = f"FAILED: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
                print(f"{part} failed: {e!r}", file=sys.stderr, flush=True)
            print(f"[{time.monotonic() - started:6.0f} s] {part} took {time.monotonic() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    took = time.monotonic() - started
    head = (f"Measured {time.strftime('%Y-%m-%d')} on {where} at the start; local backend unless a row says otherwise; "
            f"after one warm-up launch; start-up figures are medians of {repeat} launches. Class-data-sharing "
            f"archives: {cds_roles}. The whole run took {took / 60:.0f} min.")

    def document(md: bool) -> str:
        goals = [row.cells() for row in goal_rows(r, skipped)]
        parts_out = [head, "", "## Goals", "",
                     render(["figure", "ours", "baseline (same run)", "ratio", "goal", "met"], goals, md), "",
                     "## Detail", "", *detail_tables(r, repeat, md), *trick_costs(r, md)]
        return "\n".join(parts_out)

    print(document(False))
    if args.markdown:
        Path(args.markdown).write_text("# Performance\n\nWritten by `python benchmarks/run_all.py --markdown "
                                       f"docs/performance.md`.\n\n{document(True)}\n{NOTES}")
    if any(v.startswith("FAILED") for v in skipped.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
