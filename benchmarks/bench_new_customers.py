"""One-time buyers: the product's model with and without first-purchase features, BG/NBD and the population average.

BG/NBD gives a customer with a single purchase day P(alive) = 1; a model trained on everyone can rank one-time buyers
no better than chance. For every scenario (``features.synthetic.SCENARIOS``), protocol (history before the as-of
date and horizon H, as in ``bench_quality.py``) and seed:

1. generate ``history + H`` days of the scenario, run them through the input contract and the kernel's index;
2. ``training.new_customers.evaluate_one_time(prep, as_of, H, seed)``: the product's model trained with data up to
   ``as_of`` only (``model``), BG/NBD + Gamma-Gamma (``btyd``), ``naive`` and the ``population_average`` baseline
   (the one-time group's mean churn and mean future value at ``as_of - H``), scored on the true next H days, for the
   customers with exactly one purchase day by ``as_of``;
3. the same with the first-purchase features left out of the model
   (``PreparedTransactions.dropped = features.kernel.FIRST_PURCHASE_FEATURES``): ``model (without)``.

The goal (issue 13): the product beats the population average on one-time buyers: it ranks them (churn AUC above
0.5, value Spearman above 0) and its value MAE is no higher than the population average's.

    python benchmarks/bench_new_customers.py                     # 3 scenarios x 3 protocols x seeds 0,1 (~10 min)
    python benchmarks/bench_new_customers.py --quick             # smoke run
    python benchmarks/bench_new_customers.py --scenarios cohort --protocols 12m-h182 --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_quality as quality
import common

DEFAULT_PROTOCOLS = ("6m-h90", "12m-h90", "12m-h182")
QUICK_PROTOCOLS = ("6m-h90",)
DEFAULT_SEEDS = (0, 1)
WITH, WITHOUT = "model", "model (without)"
POPULATION = "population_average"
SHOWN = (
    "churn_auc",
    "churn_brier",
    "value_spearman",
    "value_normalized_gini",
    "value_mae",
    "value_total_ratio",
    "churn_churn_rate",
)


def prepared(scenario: str, history: int, horizon: int, customers: int, seed: int):
    """``(prep, as_of)``: the scenario's ``history + horizon`` days through the contract and the kernel's index."""
    from features.contract import prepare_transactions
    from features.kernel import index_transactions
    from features.synthetic import SCENARIOS, generate_transactions

    as_of = dt.date.fromisoformat(SCENARIOS[scenario].start) + dt.timedelta(days=history - 1)
    tx, _ = prepare_transactions(generate_transactions(customers, history + horizon, seed=seed, scenario=scenario))
    return index_transactions(tx), as_of


def run_one(scenario: str, history: int, horizon: int, customers: int, seed: int) -> dict[str, Any]:
    """One (scenario, protocol, seed): the one-time group's rows, in ``bench_quality.aggregate``'s run shape."""
    from features.contract import ContractError
    from features.kernel import FIRST_PURCHASE_FEATURES
    from training.new_customers import evaluate_one_time

    t0 = time.perf_counter()
    prep, as_of = prepared(scenario, history, horizon, customers, seed)
    out: dict[str, Any] = {"as_of": as_of, "seed": seed}
    try:
        with_first = evaluate_one_time(prep, as_of, horizon, seed)
        without = dataclasses.replace(prep, dropped=frozenset(FIRST_PURCHASE_FEATURES))
        without_first = evaluate_one_time(without, as_of, horizon, seed)
    except ContractError as exc:
        out.update(status="refused", message=str(exc), seconds=time.perf_counter() - t0)
        return out
    metrics = [c for c in with_first.columns if c not in ("as_of", "model", "customers", "group")]
    metrics = [c for c in metrics if with_first[c].dtype.kind == "f"]
    rows: dict[str, dict[str, float]] = {}
    for label, table, model in (
        (WITH, with_first, WITH),
        (WITHOUT, without_first, WITH),
        ("btyd", with_first, "btyd"),
        ("naive", with_first, "naive"),
        (POPULATION, with_first, POPULATION),
    ):
        row = table[table["model"] == model]
        if len(row):
            rows[label] = {m: float(row[m].iloc[0]) for m in metrics}
    heads = with_first[with_first["model"] == WITH]
    choice = {c: heads[c].iloc[0] for c in ("churn_head", "value_head") if c in heads.columns and len(heads)}
    customers_one_time = int(with_first["customers"].iloc[0]) if len(with_first) else 0
    out.update(status="ok", rows=rows, one_time=customers_one_time, choice=choice, seconds=time.perf_counter() - t0)
    return out


def _cell(table: dict[str, dict[str, float]], label: str, metric: str) -> float:
    return table.get(label, {}).get(metric, math.nan)


def verdict(table: dict[str, dict[str, float]], label: str = WITH) -> str:
    """Does ``label`` beat the population average: ranks (AUC > 0.5, Spearman > 0) and MAE no higher?"""
    auc, rho = _cell(table, label, "churn_auc"), _cell(table, label, "value_spearman")
    mae, pop_mae = _cell(table, label, "value_mae"), _cell(table, POPULATION, "value_mae")
    if not all(math.isfinite(v) for v in (auc, rho, mae, pop_mae)):
        return "–"
    missed = [name for name, ok in (("AUC", auc > 0.5), ("Spearman", rho > 0), ("MAE", mae <= pop_mae)) if not ok]
    return "yes" if not missed else f"no ({', '.join(missed)})"


def _four(table: dict[str, dict[str, float]], metric: str) -> str:
    """model / model (without) / btyd / population_average of one metric."""
    values = [_cell(table, label, metric) for label in (WITH, WITHOUT, "btyd", POPULATION)]
    return " / ".join(quality._num(v, metric) for v in values)


def summary_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for res in results:
        table = quality.aggregate(res["runs"])
        ok = [r for r in res["runs"] if r["status"] == "ok"]
        n = quality._mean([r["one_time"] for r in ok]) if ok else math.nan

        rows.append(
            [
                res["scenario"],
                res["protocol"],
                quality._status(res["runs"]),
                f"{n:,.0f}" if math.isfinite(n) else "–",
                quality._num(_cell(table, POPULATION, "churn_churn_rate")),
                _four(table, "churn_auc"),
                _four(table, "value_spearman"),
                _four(table, "value_mae"),
                _four(table, "value_total_ratio"),
                verdict(table, WITH),
                verdict(table, WITHOUT),
            ]
        )
    return rows


def render(results: list[dict[str, Any]], args: argparse.Namespace, started: dt.datetime, uptime_start: str) -> str:
    from features.kernel import FIRST_PURCHASE_FEATURES

    title = "One-time buyers: product (with / without first-purchase features) vs BG/NBD vs population average"
    lines = [
        *common.run_header(title, started, uptime_start),
        "",
        f"Scenarios: {', '.join(args.scenarios)}; protocols: {', '.join(args.protocols)}; {args.customers:,} "
        f"generated customers per scenario; seeds {', '.join(map(str, args.seeds))} (means over the seeds that ran).",
        "",
        "Group: customers with exactly one purchase day by the as-of date (`one_time`), scored on the true next H "
        "days (churn = no purchase, value = net spend). `model`: the product trained with every feature; "
        f"`model (without)`: the same without the first-purchase features ({', '.join(FIRST_PURCHASE_FEATURES)}); "
        "`population_average`: the one-time group's mean churn and mean future value at the training cutoff "
        "as-of − H (its AUC is 0.5 and its Spearman undefined by construction). See "
        "`training/new_customers.py`.",
        "",
        "## Summary",
        "",
        "Cells: model / model (without) / btyd / population_average. Beats the population average: churn AUC > 0.5, "
        "value Spearman > 0 and value MAE no higher than the population average's.",
        "",
    ]
    headers = [
        "scenario",
        "protocol",
        "status",
        "one-time buyers",
        "churn rate",
        "churn AUC",
        "value Spearman",
        "value MAE",
        "level (pred / actual)",
        "model beats pop. avg",
        "without beats pop. avg",
    ]
    lines += [common.markdown_table(headers, summary_rows(results)), ""]
    for res in results:
        runs = res["runs"]
        lines += [
            f"## {res['scenario']}, {res['protocol']}: {res['history']} days of history, as of {runs[0]['as_of']}, "
            f"horizon {res['horizon']} days",
            "",
        ]
        for r in runs:
            if r["status"] != "ok":
                lines += [f"- seed {r['seed']}: **{r['status']}**: {r['message']}", ""]
        table = quality.aggregate(runs)
        if table:
            lines += [quality.side_by_side(table, SHOWN), ""]
        for r in runs:
            if r["status"] == "ok":
                heads = ", ".join(f"{k}={v}" for k, v in r["choice"].items())
                lines += [f"- seed {r['seed']}: {r['one_time']:,} one-time buyers; model {heads}; {r['seconds']:.0f} s"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from features.synthetic import SCENARIOS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=quality._csv, default=None, help=f"of: {', '.join(SCENARIOS)}")
    parser.add_argument("--protocols", type=quality._csv, default=None, help=f"default: {','.join(DEFAULT_PROTOCOLS)}")
    parser.add_argument(
        "--customers", type=int, default=None, help=f"customers per scenario ({quality.DEFAULT_CUSTOMERS:,})"
    )
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in quality._csv(v)], default=None, help="(0,1)")
    parser.add_argument("--out", type=Path, default=None, help="results file (benchmarks/results/new-customers.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few customers, one protocol, one seed")
    args = parser.parse_args(argv)
    quality.resolve_runs(args, parser, QUICK_PROTOCOLS if args.quick else DEFAULT_PROTOCOLS)
    args.customers = args.customers or (quality.QUICK_CUSTOMERS if args.quick else quality.DEFAULT_CUSTOMERS)
    args.seeds = args.seeds or ([0] if args.quick else list(DEFAULT_SEEDS))
    if args.out is None:
        args.out = common.RESULTS / ("new-customers-quick.md" if args.quick else "new-customers.md")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark and write the results file; returns its path."""
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    uptime_start = common.uptime()
    jobs = quality.protocol_jobs(args)
    total, done = len(jobs) * len(args.seeds), 0
    results = []
    for scenario, protocol, (history, horizon) in jobs:
        runs = []
        for seed in args.seeds:
            done += 1
            run = run_one(scenario, history, horizon, args.customers, seed)
            runs.append(run)
            status = f"{run['status']} ({run['seconds']:.0f} s)"
            quality._log(f"[{done}/{total}] {scenario} {protocol} seed {seed}: {status}")
        results.append(
            {"scenario": scenario, "protocol": protocol, "history": history, "horizon": horizon, "runs": runs}
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, args, started, uptime_start))
    quality._log(f"(written to {args.out})")
    return args.out


if __name__ == "__main__":
    main()
