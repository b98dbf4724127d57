"""``make bench``: scale-out, idle cost and heartbeat throughput, each against a baseline
measured in the same run.

    python -m bench [--full] [--name NAME] [--cluster-dir DIR]
                    [--scale 500,1000] [--sweep 4,8] [--idle 1000,3000] [--idle-window 60]
                    [--heartbeat-seconds 10] [--reaction-trials 50] [--lifecycles 10]

quick (default, a few minutes on 2 cores): scale-out of 500 TaskManagers (bare API baseline
and rmd at ``rmd.kubernetes.max-parallel-requests`` 32), the idle cost at 500 over 30 s, and
heartbeats against 1,000 registered TaskManagers (rmd's app and a bare aiohttp handler): 50
clients closed loop, then 2,000 and 3,000 requests/s open loop (``bench.heartbeats``).
--full: scale-out of 1,000 and 2,000, the parallelism sweep 4 / 8 / 16 / 32 at 1,000, the
idle cost at 500 / 1,000 / 3,000 over 10 minutes each, heartbeats for 30 s.
Both profiles: reaction over 50 trials each (bench/reaction.py) and the API economy of 10
TaskManager lifecycles by kube-apiserver's own count (bench/api_economy.py).

Prints a table and writes ``bench/results/<name>.json`` with the machine's facts and what
else was running. Every machine-dependent figure has its same-run baseline beside it: on a
shared machine compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from bench.api_economy import economy, economy_lines
from bench.heartbeats import run_all
from bench.machine import busy_processes, machine_facts
from bench.reaction import reaction, reaction_lines
from bench.scale_out import TIMEOUT, BaselineResult, RmdResult, baseline, rmd_run
from rmd_dev.cluster import ControlPlane
from rmd_dev.interrupt import SIGTERM_EXIT_CODE, run_cancellable
from rmd_dev.nodes import set_node_capacity

RESULTS = Path(__file__).parent / "results"
NODE_CAPACITY = {"pods": "1000", "cpu": "64", "memory": "256Gi"}  # each of the 4 nodes


@dataclass(frozen=True)
class Profile:
    name: str
    scale_sizes: tuple[int, ...]  # at the default parallelism
    sweep_size: int | None  # the size the parallelism sweep runs at
    sweep: tuple[int, ...]
    idle_sizes: tuple[int, ...]
    idle_window: float
    heartbeat_seconds: float
    parallel: int = 32  # rmd.kubernetes.max-parallel-requests' default
    reaction_trials: int = 50  # 0: no reaction run
    lifecycles: int = 10  # TaskManager lifecycles of the API economy run; 0: none


QUICK = Profile(
    name="quick",
    scale_sizes=(500,),
    sweep_size=None,
    sweep=(),
    idle_sizes=(500,),
    idle_window=30.0,
    heartbeat_seconds=10.0,
)
FULL = Profile(
    name="full",
    scale_sizes=(1000, 2000),
    sweep_size=1000,
    sweep=(4, 8, 16, 32),
    idle_sizes=(500, 1000, 3000),
    idle_window=600.0,
    heartbeat_seconds=30.0,
)


def runs_of(profile: Profile) -> list[tuple[int, int]]:
    """(pods, parallelism) of every rmd run, each once; the sweep first, in its order (so
    two runs with the sweep in opposite orders alternate which value goes first)."""
    runs = []
    if profile.sweep_size is not None:
        runs += [(profile.sweep_size, parallel) for parallel in profile.sweep]
    runs += [(size, profile.parallel) for size in profile.scale_sizes]
    runs += [(size, profile.parallel) for size in profile.idle_sizes]
    return list(dict.fromkeys(runs))


async def run(
    profile: Profile, *, name: str, cluster_dir: Path | None, daemon_tree: Path | None = None
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "profile": profile.name,
        "machine": machine_facts(),
        "busy_before": await asyncio.to_thread(busy_processes),
        "scale_out": [],
        "idle": [],
        "daemon_tree": None if daemon_tree is None else str(daemon_tree),
    }
    print(f"bench {name}: profile {profile.name}", flush=True)
    report["heartbeats"] = await heartbeats(profile) if profile.heartbeat_seconds > 0 else None
    own = cluster_dir is None
    directory = cluster_dir or Path(tempfile.mkdtemp(prefix="rmd-bench-"))
    plane = ControlPlane(directory)
    state = await asyncio.to_thread(plane.up, nodes=4) if own else plane.status()
    if state is None:
        raise SystemExit(f"no cluster in {directory}")
    pids = {
        component.name: component.pid
        for component in state.components
        if component.name in ("kube-apiserver", "node-emulator", "etcd", "kube-scheduler")
    }
    pids["bench"] = _own_pid()
    try:
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=state.kubeconfig, client_configuration=configuration
        )
        async with client.ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            # Room for every pod of the largest run (the fake nodes hold 110 by default).
            await set_node_capacity(core, state.node_names, capacity=NODE_CAPACITY)
            namespace = await fresh_namespace(core)
            log_dir = Path(tempfile.mkdtemp(prefix="rmd-bench-logs-"))
            print(f"daemon logs in {log_dir}", flush=True)
            for pods, parallel in runs_of(profile):
                base: BaselineResult | None = None
                if pods in profile.scale_sizes or pods == profile.sweep_size:
                    base = await baseline(
                        core, namespace=namespace, pods=pods, parallel=parallel, pids=pids
                    )
                ours = await rmd_run(
                    core,
                    kubeconfig=Path(state.kubeconfig),
                    namespace=namespace,
                    pods=pods,
                    parallel=parallel,
                    pids=pids,
                    idle_window=profile.idle_window if pods in profile.idle_sizes else None,
                    log_dir=log_dir,
                    daemon_tree=daemon_tree,
                )
                record_run(report, base, ours)
            if profile.reaction_trials:
                reacted = await reaction(
                    core,
                    kubeconfig=Path(state.kubeconfig),
                    namespace=namespace,
                    trials=profile.reaction_trials,
                    pids=pids,
                    log_dir=log_dir,
                    daemon_tree=daemon_tree,
                )
                report["reaction"] = asdict(reacted)
                print("\n".join(reaction_lines(report["reaction"])), flush=True)
            if profile.lifecycles:
                spent = await economy(
                    api,
                    kubeconfig=Path(state.kubeconfig),
                    namespace=namespace,
                    count=profile.lifecycles,
                    log_dir=log_dir,
                    daemon_tree=daemon_tree,
                )
                report["api_economy"] = asdict(spent)
                print("\n".join(economy_lines(report["api_economy"])), flush=True)
            with contextlib.suppress(client.ApiException):
                await core.delete_namespace(namespace, _request_timeout=TIMEOUT)
    finally:
        if own:
            await asyncio.to_thread(plane.down)
    report["busy_after"] = await asyncio.to_thread(busy_processes)
    return report


OPEN_LOOP_RATES = (2000.0, 3000.0)  # heartbeats/s offered on a fixed schedule
RMD_SERVER = "rmd+uvloop"  # the daemon's app on the daemon's loop (rmd.eventloop)


async def heartbeats(profile: Profile) -> dict[str, Any]:
    """Closed loop (50 clients: the most each server answers) and open loop (fixed rates,
    latency from each request's scheduled time), rmd (as the daemon serves it, on uvloop)
    and bare aiohttp (on asyncio's loop) back to back."""
    measured = await run_all(
        kinds=("bare", RMD_SERVER),
        taskmanagers=1000,
        clients=50,
        seconds=profile.heartbeat_seconds,
        rates=OPEN_LOOP_RATES,
    )
    for row in (measured["closed"], *measured["open"]):
        row["rmd"] = row.pop(RMD_SERVER)
    bare, ours = measured["closed"]["bare"], measured["closed"]["rmd"]
    summary = {
        "bare": bare,
        "rmd": ours,
        "ratio_requests_per_s": round(
            ours["requests_per_s"] / max(bare["requests_per_s"], 1e-9), 2
        ),
        "ratio_p99": round(ours["p99_ms"] / max(bare["p99_ms"], 1e-9), 2),
        "ratio_server_cpu_per_request": round(
            ours["server_cpu_ms_per_request"] / max(bare["server_cpu_ms_per_request"], 1e-9), 2
        ),
        "open_loop": measured["open"],
    }
    print(
        f"heartbeats, 50 clients: rmd {ours['requests_per_s']:.0f}/s p99 {ours['p99_ms']:.1f} ms; "
        f"bare aiohttp {bare['requests_per_s']:.0f}/s p99 {bare['p99_ms']:.1f} ms; "
        f"ratio {summary['ratio_requests_per_s']}",
        flush=True,
    )
    for row in measured["open"]:
        print(
            f"heartbeats at {row['rate']:.0f}/s (open loop): p99 rmd "
            f"{row['rmd']['p99_ms']:.1f} ms, bare {row['bare']['p99_ms']:.1f} ms",
            flush=True,
        )
    return summary


def record_run(report: dict[str, Any], base: BaselineResult | None, ours: RmdResult) -> None:
    if base is not None:
        entry = {
            "pods": ours.pods,
            "parallel": ours.parallel,
            "baseline": asdict(base),
            "rmd": asdict(ours),
            "ratio_all_exist": round(ours.all_exist_s / max(base.all_exist_s, 1e-9), 2),
        }
        report["scale_out"].append(entry)
        print(
            f"scale-out {ours.pods} @ {ours.parallel}: all exist rmd {ours.all_exist_s:.2f} s "
            f"vs bare {base.all_exist_s:.2f} s (ratio {entry['ratio_all_exist']}); "
            f"registered {ours.all_registered_s:.2f} s, fulfilled {ours.fulfilled_s:.2f} s; "
            f"first / half exist rmd {ours.arrivals.first_s:.2f} / {ours.arrivals.half_s:.2f} s, "
            f"bare {base.arrivals.first_s:.2f} / {base.arrivals.half_s:.2f} s; mean create "
            f"answered in rmd {ours.create_ms_mean:.0f} ms, bare {base.create_ms_mean:.0f} ms; "
            f"Events by fulfilled: {ours.events_at_fulfilled.get('written', 0)} written, "
            f"{ours.events_at_fulfilled.get('dropped', 0)} dropped",
            flush=True,
        )
    if ours.idle is not None:
        report["idle"].append(asdict(ours.idle))
        idle = ours.idle
        print(
            f"idle {idle.taskmanagers}: daemon {idle.daemon_cpu_percent:.1f} % of a core, "
            f"RSS {idle.rss_mb_start:.0f} -> {idle.rss_mb_end:.0f} MB over {idle.window_s:g} s; "
            f"{idle.heartbeat_channels_at_end} heartbeat channels open",
            flush=True,
        )


async def fresh_namespace(core: client.CoreV1Api) -> str:
    namespace = f"bench-{int(time.time())}"
    await core.create_namespace(
        body={"metadata": {"name": namespace}},  # type: ignore[arg-type]
        _request_timeout=TIMEOUT,
    )
    async with asyncio.timeout(60):
        while True:  # the namespace's default service account comes a moment later
            with contextlib.suppress(client.ApiException):
                await core.read_namespaced_service_account(
                    "default", namespace, _request_timeout=TIMEOUT
                )
                return namespace
            await asyncio.sleep(0.1)


def table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"profile {report['profile']}: {machine['cpus']} x {machine['cpu_model']}, "
        f"{machine['memory_gb']} GB, load average {machine['load_average']} at the start "
        f"(other work on the box: compare ratios)"
    ]
    lines.append("")
    lines.append(
        f"{'scale-out':<16}{'bare: exist':>12}{'rmd: exist':>12}{'ratio':>7}"
        f"{'registered':>12}{'fulfilled':>11}{'pods/s':>8}   cpu % (apiserver/emulator/daemon)"
        " until fulfilled; until all exist"
    )
    for entry in report["scale_out"]:
        ours, base = entry["rmd"], entry["baseline"]
        cpu, early = ours["cpu_percent"], ours["cpu_percent_until_exist"]
        lines.append(
            f"{entry['pods']:>5} @ {entry['parallel']:<8}{base['all_exist_s']:>11.2f}s"
            f"{ours['all_exist_s']:>11.2f}s{entry['ratio_all_exist']:>7.2f}"
            f"{ours['all_registered_s']:>11.2f}s{ours['fulfilled_s']:>10.2f}s"
            f"{entry['pods'] / ours['fulfilled_s']:>8.1f}   "
            f"{cpu.get('kube-apiserver', 0):.0f}/{cpu.get('node-emulator', 0):.0f}/"
            f"{cpu.get('daemon', 0):.0f}; {early.get('kube-apiserver', 0):.0f}/"
            f"{early.get('node-emulator', 0):.0f}/{early.get('daemon', 0):.0f}"
        )
    lines.append("")
    lines.append(f"{'idle':<8}{'window':>8}{'daemon cpu %':>14}{'RSS MB':>16}{'growth MB':>11}")
    for idle in report["idle"]:
        lines.append(
            f"{idle['taskmanagers']:>6}  {idle['window_s']:>7.0f}s"
            f"{idle['daemon_cpu_percent']:>13.1f}"
            f"{idle['rss_mb_start']:>8.0f}->{idle['rss_mb_end']:<6.0f}{idle['rss_growth_mb']:>11.1f}"
        )
    for part, lines_of in (("reaction", reaction_lines), ("api_economy", economy_lines)):
        if part in report:
            lines += ["", *lines_of(report[part])]
    beats = report["heartbeats"]
    if beats is None:
        return "\n".join(lines)
    lines.append("")
    lines.append(
        f"{'heartbeats':<12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server cpu %':>14}"
        f"{'cpu ms/req':>12}"
    )
    for kind in ("bare", "rmd"):
        row = beats[kind]
        lines.append(
            f"{kind:<12}{row['requests_per_s']:>9.0f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
            f"{row['server_cpu_percent']:>14.0f}{row['server_cpu_ms_per_request']:>12.3f}"
        )
    lines.append(
        f"{'rmd / bare':<12}{beats['ratio_requests_per_s']:>9.2f}{'':>9}{beats['ratio_p99']:>9.2f}"
        f"{'':>14}{beats['ratio_server_cpu_per_request']:>12.2f}"
    )
    lines.append("")
    lines.append(
        f"{'open loop':<12}{'rate/s':>8}{'answered':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
        f"{'gen lag p99':>12}{'cpu ms/req':>12}"
    )
    for row in beats.get("open_loop", []):
        for kind in ("bare", "rmd"):
            one = row[kind]
            lines.append(
                f"{kind:<12}{row['rate']:>8.0f}{one['answered_per_s']:>10.0f}{one['p50_ms']:>9.1f}"
                f"{one['p99_ms']:>9.1f}{one['p999_ms']:>10.1f}{one['generator_lag_p99_ms']:>12.1f}"
                f"{one['server_cpu_ms_per_request']:>12.3f}"
            )
    return "\n".join(lines)


def _own_pid() -> int:
    import os

    return os.getpid()


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the long profile")
    parser.add_argument("--name", help="results file name (default: profile and time)")
    parser.add_argument("--cluster-dir", type=Path, help="use a running dev cluster")
    parser.add_argument("--scale", type=_sizes, help="scale-out sizes, e.g. 500,1000")
    parser.add_argument("--sweep", type=_sizes, help="parallelisms to sweep at the first size")
    parser.add_argument("--idle", type=_sizes, help="idle-cost sizes, e.g. 500,1000,3000")
    parser.add_argument("--idle-window", type=float, help="seconds of each idle measurement")
    parser.add_argument("--reaction-trials", type=int, help="trials of each reaction (0: none)")
    parser.add_argument("--lifecycles", type=int, help="API economy lifecycles (0: none)")
    parser.add_argument(
        "--heartbeat-seconds", type=float, help="seconds of each heartbeat measurement (0: none)"
    )
    parser.add_argument(
        "--daemon-tree",
        type=Path,
        help="run the daemon from another checkout (e.g. `git archive` of an older commit) "
        "to compare before and after on the same machine",
    )
    args = parser.parse_args(argv)
    profile = FULL if args.full else QUICK
    if args.scale is not None:
        profile = replace(profile, scale_sizes=args.scale)
    if args.sweep is not None:
        first = (args.scale or profile.scale_sizes or (1000,))[0]
        profile = replace(profile, sweep_size=first, sweep=args.sweep)
    if args.idle is not None:
        profile = replace(profile, idle_sizes=args.idle)
    if args.idle_window is not None:
        profile = replace(profile, idle_window=args.idle_window)
    if args.heartbeat_seconds is not None:
        profile = replace(profile, heartbeat_seconds=args.heartbeat_seconds)
    if args.reaction_trials is not None:
        profile = replace(profile, reaction_trials=args.reaction_trials)
    if args.lifecycles is not None:
        profile = replace(profile, lifecycles=args.lifecycles)
    if profile not in (QUICK, FULL):
        profile = replace(profile, name=f"{profile.name}-custom")
    name = args.name or f"{profile.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    report = run_cancellable(
        run(profile, name=name, cluster_dir=args.cluster_dir, daemon_tree=args.daemon_tree)
    )
    if report is None:
        return SIGTERM_EXIT_CODE
    print()
    print(table(report))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
