"""The one-time buyers' benchmark (benchmarks/bench_new_customers.py) runs end to end on a tiny configuration."""

from __future__ import annotations

import importlib.util
import re

import pytest
from cli_util import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_new_customers", REPO / "benchmarks" / "bench_new_customers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdict_needs_ranking_and_a_lower_mae(bench) -> None:
    pop = {"value_mae": 10.0}
    good = {"churn_auc": 0.6, "value_spearman": 0.1, "value_mae": 9.0}
    assert bench.verdict({"model": good, "population_average": pop}) == "yes"
    worse = {"churn_auc": 0.5, "value_spearman": 0.1, "value_mae": 11.0}
    assert bench.verdict({"model": worse, "population_average": pop}) == "no (AUC, MAE)"
    assert bench.verdict({"model": good}) == "–"


def test_tiny_run_writes_every_model_for_one_time_buyers(bench, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "new-customers.md"
    args = ["--scenarios", "cohort", "--protocols", "6m-h90", "--customers", "400", "--seeds", "0", "--out", str(out)]
    assert bench.main(args) == out
    text = out.read_text()
    assert "Command: `" in text and "load average" in text
    summary = next(line for line in text.splitlines() if line.startswith("| cohort "))
    cells = [c.strip() for c in summary.strip("|").split("|")]
    assert cells[2] == "ok", summary
    assert re.fullmatch(r"(\d\.\d{3} / ){3}0\.500", cells[5])  # churn AUC: model / without / btyd / population
    assert re.fullmatch(r"(yes|no \(.+\))", cells[-2]) and re.fullmatch(r"(yes|no \(.+\))", cells[-1])
    header = next(line for line in text.splitlines() if line.startswith("| metric "))
    models = [c.strip() for c in header.strip("|").split("|")][1:]
    assert models == ["model", "model (without)", "btyd", "naive", "population_average"]
