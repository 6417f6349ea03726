"""Latency and throughput of the CRM call (``POST /predict``) against its baselines, measured in one run.

    python benchmarks/bench_service.py --work /tmp/bench-service

On an empty ``--work`` folder it first makes everything it needs there (synthetic transactions, a trained
model registered as ``models:/retention@champion`` in ``<work>/mlflow.db``, the online store
``<work>/store.db``); later runs reuse them. Then, one server at a time, on 127.0.0.1 only, it loads each with
``wrk --latency`` (a warm-up, then one bounded run per line; every run stops by itself) and measures:

1. the retention service (``retention serve``), one customer by id with reasons, at 1 and 16 connections;
2. the same service, one customer with 50 inline transactions, at 1 connection;
3. a no-op endpoint on the same server stack (``benchmarks/noop_service.py``: same BentoML configuration,
   tuning, middleware and response path) - the baseline of the ratio columns - and, for reference, a no-op
   with BentoML's default configuration and a bare Starlette + uvicorn no-op (what the machine can do);
4. the raw model for one row in process (``timeit``-style: LightGBM churn + value + ``pred_contrib``);
5. ``mlflow models serve`` of the same model (``POST /invocations``, one feature row, ``dataframe_split``).

It prints a markdown table and writes it to ``benchmarks/results/service.md``. Needs ``wrk`` on the PATH
(``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "service.md"
AS_OF = "2024-12-30"
MODEL_URI = "models:/retention@champion"
HOST = "127.0.0.1"
KEEP_MARKER = "<!-- everything below this line is kept when bench_service.py rewrites this file -->"
GOALS = {
    "by_id_c1_p50_ms": 3.0,
    "by_id_c1_p99_ms": 15.0,
    "by_id_c16_rps": 500.0,
    "inline50_c1_p50_ms": 10.0,
}


# --------------------------------------------------------------------------------------------- set-up


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))  # uvicorn for mlflow
    env.pop("RETENTION_API_KEY", None)
    env.pop("BENTOML_CONFIG", None)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env


def run_cli(work: Path, *args: str) -> None:
    command = [sys.executable, "-m", "retention", *args]
    log("$ retention " + " ".join(args))
    with open(work / "setup.log", "a") as out:
        subprocess.run(command, cwd=work, env=base_env(work), stdout=out, stderr=subprocess.STDOUT, check=True)


def ensure_workspace(work: Path, customers: int) -> None:
    """Generate, train and materialize into ``work`` unless that was done before (marker file ``READY``)."""
    work.mkdir(parents=True, exist_ok=True)
    if (work / "READY").exists():
        return
    log(f"setting up {work} (takes a few minutes)")
    if not (work / "tx.parquet").exists():
        run_cli(work, "generate", "--customers", str(customers), "--days", "730", "--seed", "1", "--out", "tx.parquet")
    run_cli(work, "train", "-t", "tx.parquet", "--as-of", AS_OF, "--horizon-days", "90")
    run_cli(work, "materialize", "-t", "tx.parquet", "--as-of", AS_OF, "--store", store_url(work))
    (work / "READY").write_text(dt.datetime.now(dt.UTC).isoformat())


def store_url(work: Path) -> str:
    return f"sqlite:///{work / 'store.db'}"


# ------------------------------------------------------------------------------------- request bodies


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII text


def write_static_script(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            wrk.method = "POST"
            wrk.headers["Content-Type"] = "application/json"
            wrk.body = {lua_string(json.dumps(body))}
            """
        )
    )
    return path


def write_by_id_script(path: Path, ids: list[str]) -> Path:
    """Each request asks for the next of ``ids`` (each wrk thread starts at its own offset)."""
    listing = ",\n".join(lua_string(i) for i in ids)
    path.write_text(
        textwrap.dedent(
            """\
            local ids = {
            %s
            }
            local n = 0
            local headers = {["Content-Type"] = "application/json"}
            function init(args)
              n = math.random(1, #ids)
            end
            function request()
              n = n %% #ids + 1
              return wrk.format("POST", nil, headers, '{"customers": [{"customer_id": "' .. ids[n] .. '"}]}')
            end
            """
        )
        % listing
    )
    return path


def prepare_inputs(work: Path, n_ids: int = 2000) -> dict[str, Any]:
    """Customer ids in the store, one customer's 50 last transactions, one feature row for MLflow."""
    import numpy as np
    import pandas as pd

    from serving.store import open_store

    tx = pd.read_parquet(work / "tx.parquet")
    tx = tx[tx["timestamp"] < pd.Timestamp(AS_OF, tz="UTC") + pd.Timedelta(days=1)]
    store = open_store(store_url(work))
    info = store.info()
    all_ids = sorted(tx["customer_id"].astype(str).unique())
    rng = random.Random(7)
    ids = [i for i in rng.sample(all_ids, min(len(all_ids), 3 * n_ids))]
    found = store.read(ids)
    ids = [i for i in ids if i in found][:n_ids]

    counts = tx["customer_id"].value_counts()
    heavy = sorted(counts[counts >= 50].index.astype(str))
    cid = rng.choice(heavy)
    mine = tx[tx["customer_id"].astype(str) == cid].sort_values("timestamp").tail(50)
    inline = [
        {
            "timestamp": t.isoformat(),
            "amount": float(a),
            "transaction_id": str(i),
            "category": str(c),
            "channel": str(ch),
        }
        for t, a, i, c, ch in zip(
            mine["timestamp"], mine["amount"], mine["transaction_id"], mine["category"], mine["channel"], strict=True
        )
    ]
    # a feature row without missing values (JSON has no NaN) for mlflow models serve
    row_id = next(i for i in ids if np.isfinite(found[i]).all())
    row = [float(v) for v in found[row_id]]
    store.close()
    return {
        "ids": ids,
        "inline_customer": cid,
        "inline": inline,
        "feature_columns": list(info.feature_columns),
        "feature_row": row,
        "feature_row_id": row_id,
    }


# ---------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def server(
    name: str, command: list[str], work: Path, ready_path: str, port: int, cwd: Path, extra_env=None
) -> Iterator[tuple[str, int]]:
    """Start a server in its own process group, wait until ``ready_path`` answers 200, stop it afterwards."""
    env = {**base_env(work), **(extra_env or {})}
    logfile = open(work / f"server-{name}.log", "w")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited during start-up; see {logfile.name}")
            with contextlib.suppress(OSError):
                if http("GET", base + ready_path, timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready in 300 s; see {logfile.name}")
            time.sleep(0.5)
        log(f"{name} ready on {base} (pid {proc.pid})")
        yield base, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group of the process started above, and only that
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        logfile.close()


# -------------------------------------------------------------------------------------------------- wrk


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    threads = 1 if connections == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s"]
    command += ["-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    return parse_wrk(out)


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(out: str) -> dict[str, Any]:
    def latency(pct: int) -> float:
        match = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if match is None:
            raise ValueError(f"no {pct}% latency in wrk output:\n{out}")
        return float(match.group(1)) * _UNIT_MS[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "p50": latency(50),
        "p99": latency(99),
        "rps": float(rps.group(1)) if rps else math.nan,
        "requests": int(total.group(1)) if total else 0,
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
        "raw": out,
    }


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants (the server's processes)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_times(root: int) -> tuple[float, float]:
    """(CPU seconds used, seconds spent runnable but waiting for a CPU) of all threads of the server's processes.

    From ``/proc/PID/task/TID/schedstat``: time on a CPU and time waiting on a run queue. The second is the
    part of the latency that other work on the machine adds (it is ~0 on an idle machine).
    """
    cpu = wait = 0.0
    for pid in _tree_pids(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                on_cpu, waiting = (task / "schedstat").read_text().split()[:2]
                cpu += int(on_cpu) / 1e9
                wait += int(waiting) / 1e9
    return cpu, wait


def cpu_pressure() -> float:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI), in %."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return float(Path("/proc/pressure/cpu").read_text().split()[1].split("=")[1])
    return math.nan


def load(
    url: str, script: Path, connections: int, seconds: float, warmup: float, pgid: int | None = None
) -> dict[str, Any]:
    if warmup > 0:
        wrk(url, script, connections, warmup)
    before = tree_times(pgid) if pgid else None
    result = wrk(url, script, connections, seconds)
    if before is not None and result["requests"]:
        after = tree_times(pgid)
        result["cpu_ms"] = (after[0] - before[0]) * 1e3 / result["requests"]
        result["wait_ms"] = (after[1] - before[1]) * 1e3 / result["requests"]
    result["load_avg"] = os.getloadavg()[0]
    result["cpu_pressure"] = cpu_pressure()
    log(
        f"  c={connections:<2} p50 {result['p50']:.2f} ms  p99 {result['p99']:.2f} ms  {result['rps']:.0f} req/s"
        f"  server CPU {result.get('cpu_ms', math.nan):.2f} ms/req, waiting for a CPU"
        f" {result.get('wait_ms', math.nan):.2f} ms/req  errors {result['errors']}"
        f"  (load avg {result['load_avg']:.1f}, CPU pressure {result['cpu_pressure']:.0f}%)"
    )
    return result


# ---------------------------------------------------------------------------------------- in-process


def time_calls(fn: Callable[[], Any], n: int) -> dict[str, float]:
    for _ in range(min(200, n)):
        fn()
    samples = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    cpu = (time.process_time() - cpu0) / n
    samples.sort()
    mean = statistics.fmean(samples) / 1e9
    return {
        "p50": samples[n // 2] / 1e6,
        "p99": samples[min(n - 1, int(n * 0.99))] / 1e6,
        "rps": 1.0 / mean,
        "cpu_ms": cpu * 1e3,
        "requests": n,
        "errors": 0,
        "load_avg": os.getloadavg()[0],
        "cpu_pressure": cpu_pressure(),
    }


def in_process(work: Path, inputs: dict[str, Any], n: int) -> dict[str, dict[str, float]]:
    """Raw model calls for one row, and the whole by-id scoring function without HTTP."""
    os.environ["MLFLOW_TRACKING_URI"] = base_env(work)["MLFLOW_TRACKING_URI"]
    import numpy as np

    from serving.loader import load_model
    from serving.online import ModelHolder, OnlineScorer
    from serving.store import open_store

    model = load_model(MODEL_URI)
    store = open_store(store_url(work))
    ids = inputs["ids"]
    rows = store.read(ids[:500])
    X_rows = [np.ascontiguousarray(rows[i], dtype=np.float64).reshape(1, -1) for i in ids[:500] if i in rows]
    k = iter(range(10**12))

    def raw() -> None:
        X = X_rows[next(k) % len(X_rows)]
        model.churn_booster.predict(X, num_threads=1)
        model.value_booster.predict(X, num_threads=1)
        model.churn_booster.predict(X, pred_contrib=True, num_threads=1)

    def heads() -> None:
        X = X_rows[next(k) % len(X_rows)]
        model.churn_booster.predict(X, num_threads=1)
        model.value_booster.predict(X, num_threads=1)

    def contrib() -> None:
        model.churn_booster.predict(X_rows[next(k) % len(X_rows)], pred_contrib=True, num_threads=1)

    holder = ModelHolder(MODEL_URI)
    holder.model = model
    scorer = OnlineScorer(holder, store)

    def by_id() -> None:
        scorer.predict([{"customer_id": ids[next(k) % len(ids)]}])

    inline = [{"customer_id": inputs["inline_customer"], "transactions": inputs["inline"]}]

    def inline50() -> None:
        scorer.predict(inline, AS_OF)

    out = {
        "raw": time_calls(raw, n),
        "heads": time_calls(heads, n),
        "contrib": time_calls(contrib, n),
        "by_id": time_calls(by_id, n),
        "inline50": time_calls(inline50, max(50, n // 10)),
    }
    store.close()
    return out


# ---------------------------------------------------------------------------------------------- report


def fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def render(results: dict[str, Any], meta: dict[str, Any]) -> str:
    m = results
    noop = {c: m.get(f"noop_c{c}") for c in (1, 16)}
    lines = [
        "| what | conc. | p50 ms | p99 ms | req/s | server CPU ms/req | waiting for CPU ms/req | p50 / no-op"
        " | p99 / no-op | req/s / no-op | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, key: str, c: int | str, baseline: bool = True) -> None:
        r = m.get(key)
        if r is None:
            return
        base = noop.get(c) if baseline and isinstance(c, int) else None
        lines.append(
            f"| {label} | {c} | {fmt(r['p50'], 3 if r['p50'] < 1 else 2)} | {fmt(r['p99'], 3 if r['p99'] < 1 else 2)}"
            f" | {fmt(r['rps'], 0)} | {fmt(r.get('cpu_ms', math.nan), 3 if r.get('cpu_ms', 1) < 1 else 2)}"
            f" | {fmt(r.get('wait_ms', math.nan), 3 if r.get('wait_ms', 1) < 1 else 2)}"
            f" | {ratio(r['p50'], base and base['p50'])} | {ratio(r['p99'], base and base['p99'])}"
            f" | {ratio(r['rps'], base and base['rps'])} | {r.get('errors', 0)} |"
        )

    row("**/predict, 1 customer by id, with reasons**", "by_id_c1", 1)
    row("**/predict, 1 customer by id, with reasons**", "by_id_c16", 16)
    row("**/predict, 1 customer + 50 inline transactions**", "inline50_c1", 1)
    row("no-op on the same stack (baseline)", "noop_c1", 1)
    row("no-op on the same stack (baseline)", "noop_c16", 16)
    row("no-op, BentoML default config, `def` endpoint", "defaults_c1", 1)
    row("no-op, BentoML default config, `def` endpoint", "defaults_c16", 16)
    row("no-op, bare Starlette + uvicorn (machine reference)", "bare_c1", 1)
    row("no-op, bare Starlette + uvicorn (machine reference)", "bare_c16", 16)
    row("`mlflow models serve` /invocations, 1 feature row, no reasons", "mlflow_c1", 1)
    row("`mlflow models serve` /invocations, 1 feature row, no reasons", "mlflow_c16", 16)
    row("raw model, 1 row: churn + value + pred_contrib (in process)", "raw", "1 (timeit)", False)
    row("raw model, 1 row: churn + value only (in process)", "heads", "1 (timeit)", False)
    row("raw model, 1 row: pred_contrib only (in process)", "contrib", "1 (timeit)", False)
    row("OnlineScorer.predict by id, no HTTP (in process)", "by_id_inproc", "1 (timeit)", False)
    row("OnlineScorer.predict, 50 inline tx, no HTTP (in process)", "inline50_inproc", "1 (timeit)", False)

    checks = []

    def check(label: str, key: str, field: str, goal: float, upper: bool) -> None:
        r = m.get(key)
        if r is None:
            return
        value = r[field]
        ok = value <= goal if upper else value >= goal
        unit = "req/s" if field == "rps" else "ms"
        sign = "<=" if upper else ">="
        checks.append(f"| {label} | {fmt(value)} {unit} | {sign} {goal:g} {unit} | {'met' if ok else 'NOT met'} |")

    check("by id, c=1, p50", "by_id_c1", "p50", GOALS["by_id_c1_p50_ms"], True)
    check("by id, c=1, p99", "by_id_c1", "p99", GOALS["by_id_c1_p99_ms"], True)
    check("by id, c=16, throughput", "by_id_c16", "rps", GOALS["by_id_c16_rps"], False)
    check("50 inline transactions, c=1, p50", "inline50_c1", "p50", GOALS["inline50_c1_p50_ms"], True)

    loads = [r["load_avg"] for r in m.values() if isinstance(r, dict) and "load_avg" in r]
    pressures = [r["cpu_pressure"] for r in m.values() if isinstance(r, dict) and "cpu_pressure" in r]
    text = [
        "# Service latency: `/predict` against its baselines",
        "",
        f"Produced by `{meta['command']}` on {meta['date']} ({meta['machine']}).",
        f"wrk {meta['wrk']}, loopback ({HOST}), {meta['duration']:g} s per line after a {meta['warmup']:g} s warm-up;"
        " 1 connection = 1 wrk thread, 16 connections = 2 wrk threads; one server running at a time.",
        f"1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores;"
        f" CPU pressure (PSI, share of time some task waited for a CPU) {min(pressures):.0f}-{max(pressures):.0f}%"
        " (other work on the machine inflates absolute figures; compare within the table).",
        f"Versions: {meta['versions']}.",
        "",
        *lines,
        "",
        "Ratios are against the no-op on the same stack at the same concurrency. Server CPU = time on a CPU of all"
        " threads of the server's processes during the run / requests answered; waiting for CPU = their time"
        " runnable but queued behind other work on the machine, per request (Linux schedstat; ~0 on an idle"
        " machine). The in-process lines time single calls back to back (p50/p99 of the call, req/s = 1 / mean"
        " call time, CPU = process CPU per call).",
        "",
        "| goal | measured | target | |",
        "|---|---:|---:|---|",
        *checks,
        "",
        "Notes:",
        "",
        "- By-id requests cycle through "
        f"{meta['n_ids']} customer ids from the online store (no caching anywhere); the inline request sends the"
        " last 50 transactions of one customer with `as_of` " + AS_OF + ".",
        "- `mlflow models serve` answers churn, value, tier and segment for a feature row the caller already has"
        " (no store read, no reasons): less work than `/predict`, shown for the serving-stack comparison.",
        "- The BentoML-defaults no-op is `@bentoml.service` with no configuration and a plain `def` endpoint"
        " returning a dict; the same-stack no-op uses `serving.service.SERVICE_CONFIG`, `tune_runtime()`,"
        " `GuardMiddleware` and the same response path as `/predict`.",
    ]
    return "\n".join(text) + "\n"


def versions() -> str:
    from importlib.metadata import version

    names = ("bentoml", "mlflow", "lightgbm", "uvicorn", "starlette", "numpy")
    return ", ".join(f"{n} {version(n)}" for n in names) + f", Python {platform.python_version()}"


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-service"), help="work folder (reused)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up before each run")
    parser.add_argument("--customers", type=int, default=20_000, help="customers to generate on first set-up")
    parser.add_argument("--timeit-calls", type=int, default=3000, help="calls per in-process measurement")
    parser.add_argument(
        "--only",
        default="bare,defaults,noop,retention,mlflow,inproc",
        help="comma-separated parts to run (bare, defaults, noop, retention, mlflow, inproc)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")
    parts = set(args.only.split(","))
    work = args.work.resolve()
    ensure_workspace(work, args.customers)
    sys.path.insert(0, str(REPO))
    inputs = prepare_inputs(work)
    inline_body = {
        "customers": [{"customer_id": inputs["inline_customer"], "transactions": inputs["inline"]}],
        "as_of": AS_OF,
    }
    scripts = {
        "by_id": write_by_id_script(work / "by_id.lua", inputs["ids"]),
        "inline50": write_static_script(work / "inline50.lua", inline_body),
        "empty": write_static_script(work / "empty.lua", {}),
        "mlflow": write_static_script(
            work / "mlflow.lua",
            {"dataframe_split": {"columns": inputs["feature_columns"], "data": [inputs["feature_row"]]}},
        ),
    }
    (work / "bare_noop.py").write_text(
        textwrap.dedent(
            """\
            from starlette.applications import Starlette
            from starlette.responses import Response
            from starlette.routing import Route


            async def noop(request):
                await request.body()
                return Response(b'{"ok": true}', media_type="application/json")


            async def livez(request):
                return Response(b"\\n")


            app = Starlette(routes=[Route("/noop", noop, methods=["POST"]), Route("/livez", livez)])
            """
        )
    )
    d, w = args.duration, args.warmup
    results: dict[str, Any] = {}
    py = sys.executable

    if "inproc" in parts:
        log("in process: raw model and scorer")
        r = in_process(work, inputs, args.timeit_calls)
        results.update(raw=r["raw"], heads=r["heads"], contrib=r["contrib"])
        results.update(by_id_inproc=r["by_id"], inline50_inproc=r["inline50"])

    if "bare" in parts:
        port = free_port()
        cmd = [py, "-m", "uvicorn", "bare_noop:app", "--host", HOST, "--port", str(port), "--no-access-log"]
        with server("bare", [*cmd, "--log-level", "warning"], work, "/livez", port, work) as (base, pgid):
            log("no-op, bare Starlette + uvicorn")
            results["bare_c1"] = load(base + "/noop", scripts["empty"], 1, d, w, pgid)
            results["bare_c16"] = load(base + "/noop", scripts["empty"], 16, d, w, pgid)

    if "noop" in parts:
        port = free_port()
        cmd = [py, "-m", "bentoml", "serve", "benchmarks.noop_service:Noop", "--host", HOST, "--port", str(port)]
        with server("noop", cmd, work, "/readyz", port, REPO) as (base, pgid):
            status, body = http("POST", base + "/noop", {})
            assert status == 200 and json.loads(body) == {"ok": True}, (status, body)
            log("no-op, same stack")
            results["noop_c1"] = load(base + "/noop", scripts["empty"], 1, d, w, pgid)
            results["noop_c16"] = load(base + "/noop", scripts["empty"], 16, d, w, pgid)

    if "retention" in parts:
        port = free_port()
        cmd = [py, "-m", "retention", "serve", "--model", MODEL_URI, "--port", str(port), "--host", HOST]
        cmd += ["--store", store_url(work)]
        with server("retention", cmd, work, "/readyz", port, work) as (base, pgid):
            status, body = http("POST", base + "/predict", {"customers": [{"customer_id": inputs["ids"][0]}]})
            answer = json.loads(body)
            assert status == 200 and answer["predictions"][0].get("reasons"), (status, body[:500])
            status, body = http("POST", base + "/predict", inline_body)
            assert status == 200 and "churn_probability" in json.loads(body)["predictions"][0], (status, body[:500])
            log("/predict by id")
            results["by_id_c1"] = load(base + "/predict", scripts["by_id"], 1, d, w, pgid)
            results["by_id_c16"] = load(base + "/predict", scripts["by_id"], 16, d, w, pgid)
            log("/predict, 50 inline transactions")
            results["inline50_c1"] = load(base + "/predict", scripts["inline50"], 1, d, w, pgid)

    if "defaults" in parts:
        port = free_port()
        cmd = [py, "-m", "bentoml", "serve", "benchmarks.noop_service:Noop", "--host", HOST, "--port", str(port)]
        with server("noop-defaults", cmd, work, "/readyz", port, REPO, {"NOOP_STACK": "defaults"}) as (base, pgid):
            log("no-op, BentoML defaults")
            results["defaults_c1"] = load(base + "/noop", scripts["empty"], 1, d, w, pgid)
            results["defaults_c16"] = load(base + "/noop", scripts["empty"], 16, d, w, pgid)

    if "mlflow" in parts:
        port = free_port()
        cmd = [py, "-m", "mlflow", "models", "serve", "-m", MODEL_URI, "--env-manager", "local"]
        cmd += ["--host", HOST, "--port", str(port)]
        with server("mlflow", cmd, work, "/ping", port, work) as (base, pgid):
            payload = {"dataframe_split": {"columns": inputs["feature_columns"], "data": [inputs["feature_row"]]}}
            status, body = http("POST", base + "/invocations", payload)
            assert status == 200 and b"churn_probability" in body, (status, body[:500])
            log("mlflow models serve /invocations")
            results["mlflow_c1"] = load(base + "/invocations", scripts["mlflow"], 1, d, w, pgid)
            results["mlflow_c16"] = load(base + "/invocations", scripts["mlflow"], 16, d, w, pgid)

    command = "python benchmarks/bench_service.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}",
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip() or "?",
        "duration": d,
        "warmup": w,
        "versions": versions(),
        "n_ids": len(inputs["ids"]),
    }
    report = render(results, meta)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = ""
    if args.out.exists() and KEEP_MARKER in (previous := args.out.read_text()):
        kept = previous.split(KEEP_MARKER, 1)[1]  # hand-written notes below the marker survive a re-run
    args.out.write_text(f"{report}\n{KEEP_MARKER}{kept or chr(10)}")
    (work / "results.json").write_text(
        json.dumps({k: {f: v for f, v in r.items() if f != "raw"} for k, r in results.items()}, indent=1)
    )
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
