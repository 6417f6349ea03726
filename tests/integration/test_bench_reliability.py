"""The reliability benchmark (benchmarks/bench_reliability.py) on a tiny configuration of scenario 1.

Scenario 3 (kill -9 of the batch job) is what tests/integration/test_batch.py and test_batch_tasks.py check
with assertions; running it here too would only repeat that work in the suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from cli_util import REPO


def load_bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_reliability", REPO / "benchmarks" / "bench_reliability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_writes_the_tables(tmp_path: Path) -> None:
    bench = load_bench()
    out = tmp_path / "reliability.md"
    # fmt: off
    args = [
        "--work", str(tmp_path / "work"), "--out", str(out), "--scenarios", "1",
        "--train-customers", "400", "--ids", "40", "--threads", "2", "--load-seconds", "4", "--every", "1",
    ]
    # fmt: on
    assert bench.main(args) == out
    text = out.read_text()
    assert "## 1. Load under reloads and promotions" in text
    assert "## Failures found" in text
    assert "| 200s mixing versions" in text
    assert "Command:" in text and "load average" in text
    assert "mixed versions" not in text.split("## Failures found")[1]
