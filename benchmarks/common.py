"""Shared helpers of the benchmark scripts: data and model set-up, timing, peak memory, markdown output.

Measuring: every benchmark runs each measured step in a fresh child process (``bench_X.py --phase NAME``) so that
one step's memory does not inflate the next one's peak. Two peaks are reported:

- *step peak*: the resident-set high-water mark of the timed code alone. The child resets the kernel's
  high-water mark (``/proc/self/clear_refs`` = 5) right before the timed code and reads ``VmHWM`` after it, so
  the number covers the input already in memory plus whatever the step allocates;
- *process peak*: ``ru_maxrss`` of the whole child from ``wait4`` (imports and input loading included), the same
  figure ``/usr/bin/time -v`` prints as "Maximum resident set size".

Timings on this machine are noisy (2 cores shared with other jobs), so every table also gives ratios between
numbers measured in the same run, and the machine's load average at the start and end of the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
START_DATE = "2023-01-01"
RESULT_PREFIX = "BENCH-RESULT "
SUPPRESS = argparse.SUPPRESS  # help of the options the orchestrator passes to its phases

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- memory ------------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    kb = _status_kb("VmRSS")
    if kb is None:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    return kb / 1024


def reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """RSS high-water mark of this process since the last :func:`reset_peak` (MiB)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


class Step:
    """Time one step and its RSS high-water mark: ``with Step() as s: ...; s.seconds, s.peak_mb, s.start_mb``."""

    def __enter__(self) -> Step:
        import gc

        gc.collect()
        self.peak_reset = reset_peak()
        self.start_mb = rss_mb()
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._c0
        self.peak_mb = peak_mb()
        self.end_mb = rss_mb()

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}seconds": self.seconds,
            f"{prefix}cpu_seconds": self.cpu_seconds,
            f"{prefix}peak_mb": self.peak_mb,
            f"{prefix}start_mb": self.start_mb,
        }


def timed(fn: Callable[[], Any]) -> tuple[Any, Step]:
    with Step() as step:
        out = fn()
    return out, step


# --- child processes ---------------------------------------------------------------------------------------------


def run_measured(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    log: Path | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run a command to completion (or kill it after ``timeout`` s): wall seconds, peak RSS (``ru_maxrss`` from
    ``wait4``), CPU seconds, exit code, ``timed_out`` and the combined output."""
    import threading

    out_file = tempfile.TemporaryFile(mode="w+") if log is None else open(log, "w+")  # noqa: SIM115
    with out_file:
        print(f"  $ {shlex.join(cmd)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), stdout=out_file, stderr=subprocess.STDOUT, env=env, cwd=None if cwd is None else str(cwd)
        )
        fired = threading.Event()

        def stop() -> None:
            fired.set()
            proc.kill()

        timer = threading.Timer(timeout, stop) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        output = out_file.read()
    return {
        "returncode": proc.returncode,
        "timed_out": fired.is_set(),
        "seconds": seconds,
        "peak_mb": usage.ru_maxrss / 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "output": output,
    }


def result_from(output: str) -> dict | None:
    """The result a phase printed with :func:`emit` (None when it printed none)."""
    result = None
    for line in output.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
    return result


def run_phase(script: str | Path, phase: str, args: Sequence[str] = (), *, env: dict[str, str] | None = None) -> dict:
    """Run ``python script --phase phase args`` and return its result dict plus ``process_*`` figures."""
    cmd = [sys.executable, str(script), "--phase", phase, *args]
    res = run_measured(cmd, env=env)
    result = result_from(res["output"])
    if res["returncode"] != 0 or result is None:
        raise RuntimeError(f"phase {phase} failed (exit {res['returncode']}):\n{res['output'][-4000:]}")
    result.update(
        process_seconds=res["seconds"], process_peak_mb=res["peak_mb"], process_cpu_seconds=res["cpu_seconds"]
    )
    print(f"  {phase}: {json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)})}", file=sys.stderr)
    return result


def emit(result: dict[str, Any]) -> None:
    """Print a phase's result for :func:`run_phase` (last line of the child's output)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- data and model ----------------------------------------------------------------------------------------------


def default_work() -> Path:
    return Path(os.environ.get("RETENTION_BENCH_WORK", Path(tempfile.gettempdir()) / "retention-bench"))


def retention_cmd() -> list[str]:
    return [sys.executable, "-m", "retention"]


def last_day(days: int, start: str = START_DATE) -> str:
    return str(dt.date.fromisoformat(start) + dt.timedelta(days=days - 1))


def ensure_dataset(work: Path, customers: int, days: int, seed: int) -> tuple[Path, dict | None]:
    """``retention generate`` once per (customers, days, seed); later runs reuse the file."""
    path = work / f"tx_c{customers}_d{days}_s{seed}.parquet"
    if path.exists():
        return path, None
    work.mkdir(parents=True, exist_ok=True)
    cmd = [*retention_cmd(), "generate", "--customers", str(customers), "--days", str(days), "--seed", str(seed)]
    res = run_measured([*cmd, "--out", str(path)], cwd=REPO)
    if res["returncode"] != 0:
        raise RuntimeError(f"generate failed:\n{res['output'][-3000:]}")
    return path, res


def mlflow_env(work: Path, model_customers: int) -> dict[str, str]:
    """Environment with MLflow tracking in a sqlite file of the work folder (one per training sample size)."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(work / f'mlflow_c{model_customers}.db').resolve()}"
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


MODEL_URI = "models:/retention@champion"


def ensure_model(work: Path, customers: int, days: int, seed: int = 1) -> tuple[str, dict | None]:
    """Train a champion on a smaller sample (same generator parameters and days) once per work folder."""
    marker = work / f"model_c{customers}_d{days}_s{seed}.json"
    if marker.exists():
        return MODEL_URI, None
    data, _ = ensure_dataset(work, customers, days, seed)
    cmd = [*retention_cmd(), "train", "-t", str(data), "--as-of", last_day(days), "--horizon-days", "90", "--force"]
    res = run_measured(cmd, env=mlflow_env(work, customers), cwd=work)
    if res["returncode"] != 0:
        raise RuntimeError(f"train failed:\n{res['output'][-3000:]}")
    marker.write_text(json.dumps({"uri": MODEL_URI, "seconds": res["seconds"], "peak_mb": res["peak_mb"]}))
    return MODEL_URI, res


CONTRACT_COLUMNS = ("customer_id", "timestamp", "amount", "category", "channel")


def contract_cache(raw: Path, as_of: str) -> Path:
    return raw.with_name(f"{raw.stem}.contract-{as_of}.parquet")


def load_contract_frame(raw: Path, as_of: str):
    """The contract's valid transactions (the kernel's input columns), computed once and cached next to ``raw``."""
    import pandas as pd

    cache = contract_cache(raw, as_of)
    if cache.exists():
        return pd.read_parquet(cache)
    from features.contract import prepare_transactions

    tx, _ = prepare_transactions(pd.read_parquet(raw), as_of=as_of)
    tx = tx[[c for c in CONTRACT_COLUMNS if c in tx.columns]]
    save_contract_frame(tx, cache)
    return tx


def save_contract_frame(tx, cache: Path) -> None:
    tmp = cache.with_name(cache.name + ".tmp")
    tx[[c for c in CONTRACT_COLUMNS if c in tx.columns]].to_parquet(tmp, index=False)
    os.replace(tmp, cache)


# --- output ------------------------------------------------------------------------------------------------------


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def uptime() -> str:
    """What ``uptime`` prints (the load averages), or the load averages alone where it cannot run."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average {load_average()}"


def machine() -> str:
    import numpy
    import pandas
    import pyarrow

    mem = ""
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs{mem}; Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}"
    )


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(REPO)
    except ValueError:
        shown = script
    return shlex.join(["python", str(shown), *sys.argv[1:]])


def run_header(title: str, started: dt.datetime, uptime_start: str) -> list[str]:
    """A results file's first lines: the title, the command, the run's start and length, the machine, and the load
    (``uptime``) at the start and now."""
    minutes = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
    return [
        f"# {title}",
        "",
        f"Command: `{command_line()}` (from the repository root, with the project's virtualenv python)",
        "",
        f"Run: {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min; machine: {machine()}.",
        f"Load (`uptime`) at start: `{uptime_start}`; at end: `{uptime()}`.",
    ]


class Report:
    """Collects the sections of one results file; printed to stdout and written to benchmarks/results/NAME.md."""

    def __init__(self, name: str, title: str):
        self.name = name
        self.title = title
        self.started = dt.datetime.now(dt.UTC)
        self.load_start = load_average()
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def table(self, heading: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> None:
        text = f"## {heading}\n\n{markdown_table(headers, rows)}\n"
        if note:
            text += f"\n{textwrap.dedent(note).strip()}\n"
        self.add(text)

    def render(self) -> str:
        head = [
            f"# {self.title}",
            "",
            f"Command: `{command_line()}` (from the repository root, with the project's virtualenv python)",
            "",
            f"Run: {self.started:%Y-%m-%d %H:%M} UTC, "
            f"{(dt.datetime.now(dt.UTC) - self.started).total_seconds() / 60:.1f} min; machine: {machine()}; "
            f"load average (1/5/15 min) at start {self.load_start}, at end {load_average()}.",
            "",
        ]
        return "\n".join(head) + "\n" + "\n".join(self.parts)

    def write(self, suffix: str = "") -> Path:
        text = self.render()
        print(text)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}{suffix}.md"
        path.write_text(text)
        print(f"(written to {path.relative_to(REPO)})", file=sys.stderr)
        return path


def base_parser(description: str):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, default=default_work(), help="work folder for data, models and outputs")
    parser.add_argument("--quick", action="store_true", help="small data: a smoke run of the whole benchmark")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    return parser
