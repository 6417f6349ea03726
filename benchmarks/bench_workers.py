"""Throughput of the CRM call (one customer by id, with reasons) at 16 connections for 1 vs N BentoML workers
(``RETENTION_WORKERS``), side by side in one run.

    python benchmarks/bench_workers.py --work /tmp/bench-service --workers 1,2 --rounds 3

Reuses ``benchmarks/bench_service.py``'s workspace (made on first use), request script, servers and ``wrk`` runs.
One ``retention serve`` per worker count runs for the whole benchmark (on 127.0.0.1); before measuring, each is
checked to answer from every worker (``/model`` names the worker PID) with one model version. Then, round after
round, each server gets one ``wrk`` run of ``--duration`` seconds at 16 connections after a short warm-up, in turn
(the order flips every round), so that all configurations see the same changing load of a shared machine; the ratio
is taken within each round. Each round also measures the one-worker server at ``16 / N`` connections: the share of
the connections each of N workers gets, whose CPU time per request is what each of N workers pays (the service
merges concurrent by-id requests into one scoring call, so it falls as connections per worker grow). Writes a
markdown table with the command, every run, the median ratio, the server's CPU time per request and ``uptime``'s
load after each run to ``benchmarks/results/workers.md`` (what is below its keep marker is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_service as bench

RESULTS = bench.REPO / "benchmarks" / "results" / "workers.md"
CONNECTIONS = 16


def workers_answering(base: str, expected: int, seconds: float = 60.0) -> dict[int, str | None]:
    """Each worker PID seen on ``/model`` and its model version, once ``expected`` workers answered (bounded)."""
    seen: dict[int, str | None] = {}
    deadline = time.monotonic() + seconds
    while len(seen) < expected and time.monotonic() < deadline:
        status, body = bench.http("POST", base + "/model", {})
        if status == 200:
            info = json.loads(body)
            seen[info["worker_pid"]] = info["model_version"]
    return seen


def start(stack: contextlib.ExitStack, work: Path, workers: int) -> tuple[str, int]:
    """``retention serve --workers N`` (kept running until ``stack`` closes), checked: N workers, one version."""
    port = bench.free_port()
    cmd = [sys.executable, "-m", "retention", "serve", "--model", bench.MODEL_URI, "--port", str(port)]
    cmd += ["--host", bench.HOST, "--store", bench.store_url(work), "--workers", str(workers)]
    env = {"RETENTION_HOME": str(work / "home")}
    base, pgid = stack.enter_context(bench.server(f"workers-{workers}", cmd, work, "/readyz", port, work, env))
    seen = workers_answering(base, workers)
    if len(seen) != workers or len(set(seen.values())) != 1:
        raise RuntimeError(f"expected {workers} workers on one version, saw {seen}")
    bench.log(f"{workers} worker(s): PIDs {sorted(seen)}, version {next(iter(seen.values()))}")
    return base, pgid


def worker_rss_mb(server_pgid: int) -> list[float]:
    """Resident memory of each BentoML worker of the server (MB): one model copy and one Python runtime each."""
    import psutil

    from serving.supervise import worker_pids

    return [psutil.Process(pid).memory_info().rss / 2**20 for pid in worker_pids(server_pgid)]


def uptime() -> str:
    """``uptime``'s three load averages (1, 5, 15 min)."""
    out = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    return out.split("load average:")[-1].strip()


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured configuration: ``workers`` worker processes at ``connections`` connections."""

    workers: int
    connections: int

    @property
    def label(self) -> str:
        share = "" if self.connections == CONNECTIONS else f" (the share of one of {CONNECTIONS // self.connections})"
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}, {self.connections} connections{share}"


def plan(counts: list[int]) -> list[Run]:
    """Each worker count at :data:`CONNECTIONS` connections, then the first (one worker) at each other count's share
    of the connections (``16 / N``): what each of N workers sees, so its CPU per request there is that of N workers
    without the contention of sharing the machine."""
    runs = [Run(n, CONNECTIONS) for n in counts]
    return runs + [Run(counts[0], CONNECTIONS // n) for n in counts[1:] if CONNECTIONS // n != CONNECTIONS]


def measure(
    servers: dict[int, tuple[str, int]], script: Path, runs: list[Run], rounds: int, duration: float, warmup: float
) -> list[dict[Run, dict[str, Any]]]:
    """``rounds`` rounds of one wrk run per entry of ``runs`` (order reversed every other round)."""
    results: list[dict[Run, dict[str, Any]]] = []
    for r in range(rounds):
        done: dict[Run, dict[str, Any]] = {}
        for run in runs if r % 2 == 0 else list(reversed(runs)):
            base, pgid = servers[run.workers]
            bench.log(f"round {r + 1}: {run.label}")
            done[run] = bench.load(base + "/predict", script, run.connections, duration, warmup, pgid)
            done[run]["uptime"] = uptime()
        results.append({run: done[run] for run in runs})
    return results


def render(results: list[dict[Run, dict[str, Any]]], command: str, rss: dict[int, list[float]]) -> str:
    """The results file: every run, the ratio to the first run of its round, and the medians over the rounds."""
    runs = list(results[0])
    first = runs[0]
    lines = [
        "# Service throughput: 1 vs N workers (`RETENTION_WORKERS`)",
        "",
        f"`{command}` on {os.cpu_count()} cores ({platform.processor() or platform.machine()}),"
        f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. `POST /predict`, one customer by id with reasons"
        " (wrk runs on the same machine). One server per worker count runs for the whole benchmark; each round"
        " measures every line once, in turn (the order flips every round). Resident memory of each worker after"
        " the runs: "
        + "; ".join(f"{n} worker(s): {', '.join(f'{mb:.0f} MB' for mb in sizes)}" for n, sizes in rss.items())
        + ".",
        "",
        f"| round | run | req/s | vs {first.label} | p50 ms | p99 ms | server CPU ms/req |"
        " waiting for a CPU ms/req | errors | CPU pressure | load (`uptime` after the run) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, rnd in enumerate(results, 1):
        for run, r in rnd.items():
            lines.append(
                f"| {i} | {run.label} | {r['rps']:.0f} | {r['rps'] / rnd[first]['rps']:.2f}x | {r['p50']:.2f} |"
                f" {r['p99']:.2f} | {r.get('cpu_ms', float('nan')):.2f} | {r.get('wait_ms', float('nan')):.2f} |"
                f" {r['errors']} | {r['cpu_pressure']:.0f}% | {r['uptime']} |"
            )
    lines += ["", "| run | median req/s | median ratio (within a round) | median server CPU ms/req |"]
    lines += ["|---|---:|---:|---:|"]
    for run in runs:
        rps = statistics.median(rnd[run]["rps"] for rnd in results)
        ratio = statistics.median(rnd[run]["rps"] / rnd[first]["rps"] for rnd in results)
        cpu = statistics.median(rnd[run].get("cpu_ms", float("nan")) for rnd in results)
        lines.append(f"| {run.label} | {rps:.0f} | {ratio:.2f}x | {cpu:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-service"), help="work folder (reused)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts, the first is the baseline")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one run per worker count")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up before each run")
    parser.add_argument("--customers", type=int, default=20_000, help="customers to generate on first set-up")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")
    work = args.work.resolve()
    bench.ensure_workspace(work, args.customers)
    sys.path.insert(0, str(bench.REPO))
    script = bench.write_by_id_script(work / "by_id.lua", bench.prepare_inputs(work)["ids"])
    with contextlib.ExitStack() as stack:
        counts = [int(n) for n in args.workers.split(",")]
        servers = {n: start(stack, work, n) for n in counts}
        results = measure(servers, script, plan(counts), args.rounds, args.duration, args.warmup)
        rss = {n: worker_rss_mb(pgid) for n, (_, pgid) in servers.items()}
    command = "python benchmarks/bench_workers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(results, command.strip(), rss)
    print(text)
    old = args.out.read_text() if args.out.exists() else ""
    kept = old.split(bench.KEEP_MARKER, 1)[1] if bench.KEEP_MARKER in old else "\n"
    args.out.write_text(f"{text}\n{bench.KEEP_MARKER}\n{kept}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
