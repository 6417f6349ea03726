"""The quality scoreboard (benchmarks/bench_quality.py) runs end to end on a tiny configuration."""

from __future__ import annotations

import importlib.util
import re

import pytest
from cli_util import REPO

ROOT = REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_protocol_specs(bench):
    assert bench.parse_protocol("12m-h182") == (365, 182)
    assert bench.parse_protocol("6m-h90") == (183, 90)
    assert bench.parse_protocol("2y-h90") == (730, 90)
    assert bench.parse_protocol("30d-h7") == (30, 7)
    with pytest.raises(Exception, match="must look like"):
        bench.parse_protocol("twelve-months")


def test_tiny_run_writes_every_models_rows(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "quality.md"
    path = bench.main(["--scenarios", "default", "--protocols", "12m-h90", "--customers", "300", "--out", str(out)])
    assert path == out
    text = out.read_text()
    assert "Command: `" in text and "load average" in text  # the command and the machine load (uptime)
    summary = [line for line in text.splitlines() if line.startswith("| default ")]
    assert len(summary) == 2 and "12m-h90" in summary[0]  # the quality summary, then the interval coverage
    if "refused" in summary[0]:  # the training design may refuse a short history: recorded, not raised
        assert "**refused**:" in text
        return
    header = next(line for line in text.splitlines() if line.startswith("| metric "))
    models = [c.strip() for c in header.strip("|").split("|")][1:]
    assert "btyd" in models and "naive" in models
    assert any(m not in ("btyd", "naive") for m in models)  # the product's model
    for metric in bench.KEY_METRICS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {metric} "))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert len(cells) == len(models)
        assert all(re.fullmatch(r"-?[\d,]+\.\d+", c) for c in cells), row
    # the summary compares the product with BG/NBD on every criterion
    assert re.search(r"\| (yes|no) \(", summary[0])
    # the interval summary: coverage means with the seeds within 3 points, and the equity interval
    cells = [c.strip() for c in summary[1].strip("|").split("|")][2:]
    assert len(cells) == len(bench.INTERVAL_HEADERS)
    assert all(re.fullmatch(r"\d\.\d{3} \([01]/1\)", c) for c in (cells[0], cells[2], cells[4])), summary[1]
    assert cells[1] == "–" or re.fullmatch(r"\d\.\d{3} \([01]/1\)", cells[1])  # top tier at V: few customers
    assert re.fullmatch(r"[01]/1", cells[-1])
    for metric in ("interval_coverage", "purchases_interval_coverage", "equity_covered"):
        assert any(line.startswith(f"| {metric} ") for line in text.splitlines())
