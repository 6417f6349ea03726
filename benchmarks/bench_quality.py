"""Quality scoreboard: the product's model against BG/NBD + Gamma-Gamma and naive on realistic generator scenarios.

For every scenario (``features.synthetic.SCENARIOS``: ``default``, ``cohort``, ``seasonal``) and every protocol (a
history length before the as-of date and a horizon H), and every seed:

1. generate ``history + H`` days of the scenario (seeded, from the scenario's first day);
2. run them through the input contract (``features.contract.prepare_transactions``: rows without a customer id
   are counted and dropped there, duplicates kept once) and ``features.kernel.index_transactions``;
3. call ``training.jobs.evaluate_fold(prep, as_of, H, seed)`` with ``as_of`` = the last day of the history: it
   trains the product's model with data up to ``as_of`` only, scores every customer with a transaction on or before
   ``as_of`` and compares the product's model ("model"), BG/NBD + Gamma-Gamma ("btyd") and naive with the true
   next H days. Whatever rows it returns (extra models, per-segment rows) are printed; a
   ``features.contract.ContractError`` (e.g. history too short for the training design) is recorded as "refused".

The results file (``benchmarks/results/quality.md`` by default) holds, per protocol, a side-by-side table (rows =
metrics, columns = models; means over seeds) and a summary: is the product's model at least as good as BG/NBD on
churn AUC, value Spearman, normalized Gini and top-20% capture, no worse on MAE, and is its level (total predicted /
actual) within +-10% where BG/NBD's is. A second summary holds the coverage of the product's 80% intervals
(:func:`training.jobs.interval_columns`) per protocol and seed: all customers (against 80% and against what the
intervals promise with a point mass at 0), customers with P(no purchase) <= 80%, the top tier, purchase days and
the equity (total) interval.

    python benchmarks/bench_quality.py                       # default size (about 15 min on 2 cores)
    python benchmarks/bench_quality.py --quick               # smoke run: small customer counts, 2 protocols
    python benchmarks/bench_quality.py --scenarios cohort --protocols 12m-h182,6m-h90 --seeds 0,1
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DEFAULT_PROTOCOLS = ("6m-h90", "9m-h90", "12m-h90", "12m-h182", "24m-h90")
QUICK_PROTOCOLS = ("6m-h90", "12m-h90")
DEFAULT_CUSTOMERS = 6_000
QUICK_CUSTOMERS = 800
BTYD = "btyd"
LEVEL_TOLERANCE = 0.10
# metrics shown first, in this order (the rest follow as evaluate_fold returns them)
KEY_METRICS = (
    "churn_auc",
    "churn_brier",
    "value_spearman",
    "value_normalized_gini",
    "value_top20_capture",
    "value_mae",
    "value_total_ratio",
)
HIGHER_IS_BETTER = {
    "AUC": "churn_auc",
    "Spearman": "value_spearman",
    "Gini": "value_normalized_gini",
    "top-20%": "value_top20_capture",
}
INTERVAL_TOLERANCE = 0.03
"""Coverage goal of the 80% intervals: within 3 points (of 80%, or of the promised coverage)."""
_UNIT_DAYS = {"d": 1.0, "w": 7.0, "m": 365.0 / 12.0, "y": 365.0}
_PROTOCOL = re.compile(r"^(\d+)([dwmy])-h(\d+)$")


def parse_protocol(spec: str) -> tuple[int, int]:
    """``"12m-h182"`` -> (365 history days, 182-day horizon); units d, w, m (365/12 days), y."""
    match = _PROTOCOL.match(spec.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"protocol '{spec}' must look like 12m-h182 (history d/w/m/y, horizon days)")
    n, unit, horizon = int(match.group(1)), match.group(2), int(match.group(3))
    history = int(n * _UNIT_DAYS[unit] + 0.5)
    if history < 30 or horizon < 1:
        raise argparse.ArgumentTypeError(f"protocol '{spec}': at least 30 days of history and a 1-day horizon")
    return history, horizon


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- one run -----------------------------------------------------------------------------------------------------


def _label_columns(table) -> tuple[list[str], list[str]]:
    """(columns naming a row: ``model`` first, then e.g. ``group``; annotations: text only some rows have, such as
    the product's choices). Every other column is a metric."""
    import pandas as pd

    labels, notes = ["model"], []
    for c in table.columns:
        if c in ("as_of", "model") or pd.api.types.is_numeric_dtype(table[c]):
            continue
        (labels if table[c].notna().all() else notes).append(c)
    return labels, notes


def _row_label(row: dict[str, Any], labels: Sequence[str]) -> str:
    parts = [str(row["model"])]
    for c in labels[1:]:
        v = row.get(c)
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("", "all"):
            continue
        parts.append(str(v))
    return " / ".join(parts)


def run_one(scenario: str, history: int, horizon: int, customers: int, seed: int) -> dict[str, Any]:
    """Generate, prepare and evaluate one (scenario, protocol, seed); never raises for a refusal."""
    import numpy as np

    from features.contract import ContractError, prepare_transactions
    from features.kernel import index_transactions
    from features.synthetic import SCENARIOS, generate_transactions
    from training.jobs import evaluate_fold

    preset = SCENARIOS[scenario]
    first = dt.date.fromisoformat(preset.start)
    as_of = first + dt.timedelta(days=history - 1)
    t0 = time.perf_counter()
    raw = generate_transactions(customers, history + horizon, seed=seed, scenario=scenario)
    tx, report = prepare_transactions(raw)
    prep = index_transactions(tx)
    as_of_day = (np.datetime64(as_of, "D") - np.datetime64("1970-01-01", "D")).astype(np.int64)
    seen = prep.day <= as_of_day
    n_present = int(np.unique(prep.code[seen]).size)
    purchase = seen & (prep.amount >= 0)
    code_day = np.unique(np.stack([prep.code[purchase], prep.day[purchase]]), axis=1)
    days_per_customer = np.bincount(code_day[0], minlength=prep.n_customers)
    buyers = days_per_customer > 0
    data = {
        "rows": len(raw),
        "rows_without_id": report.rule_counts["null_customer_id"],
        "refunds": report.refunds,
        "customers_at_as_of": n_present,
        "single_day_share": float((days_per_customer[buyers] == 1).mean()) if buyers.any() else math.nan,
        "prepare_seconds": time.perf_counter() - t0,
    }
    t1 = time.perf_counter()
    out: dict[str, Any] = {"as_of": as_of, "data": data, "seed": seed}
    try:
        table = evaluate_fold(prep, as_of, horizon, seed)
    except ContractError as exc:
        out.update(status="refused", message=str(exc), seconds=time.perf_counter() - t1)
        return out
    except Exception as exc:  # record and go on: one failing protocol must not hide the others
        import traceback

        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/site-packages/" not in f.filename][-3:]
        chain = " > ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames)
        message = f"{type(exc).__name__}: {exc} (at {chain})"
        out.update(status="failed", message=message, seconds=time.perf_counter() - t1)
        return out
    labels, notes = _label_columns(table)
    numeric = set(table.select_dtypes("number").columns)
    metric_cols = [c for c in table.columns if c in numeric and c not in ("as_of", "customers")]
    rows, annotations, sizes = {}, {}, {}
    for record in table.to_dict("records"):
        label = _row_label(record, labels)
        rows[label] = {c: float(record[c]) for c in metric_cols}
        if "customers" in record:
            sizes[label] = int(record["customers"])
        extra = {c: record[c] for c in notes if record[c] is not None and record[c] == record[c]}
        if extra:
            annotations[label] = extra
    out.update(annotations=annotations, sizes=sizes)
    customers_scored = int(table["customers"].iloc[0]) if "customers" in table.columns and len(table) else n_present
    out.update(status="ok", rows=rows, customers=customers_scored, seconds=time.perf_counter() - t1)
    return out


# --- aggregation and output --------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean over the successful seeds: {row label: {metric: value}} (labels and metrics in first-seen order)."""
    ok = [r for r in runs if r["status"] == "ok"]
    labels: list[str] = []
    metrics: list[str] = []
    for r in ok:
        for label, values in r["rows"].items():
            if label not in labels:
                labels.append(label)
            metrics.extend(m for m in values if m not in metrics)
    return {
        label: {m: _mean([r["rows"].get(label, {}).get(m, math.nan) for r in ok]) for m in metrics} for label in labels
    }


def _ordered_metrics(table: dict[str, dict[str, float]]) -> list[str]:
    seen: list[str] = []
    for values in table.values():
        seen.extend(m for m in values if m not in seen)
    return [m for m in KEY_METRICS if m in seen] + [m for m in seen if m not in KEY_METRICS]


def _num(value: float, metric: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if metric.endswith(("_mae", "_rmse", "_total_pred", "_total_actual")):
        return f"{value:,.1f}"
    return f"{value:.3f}"


def side_by_side(table: dict[str, dict[str, float]], metrics: Sequence[str] | None = None) -> str:
    labels = list(table)
    names = _ordered_metrics(table) if metrics is None else [m for m in _ordered_metrics(table) if m in metrics]
    rows = [[m, *[_num(table[label].get(m, math.nan), m) for label in labels]] for m in names]
    return common.markdown_table(["metric", *labels], rows)


def _verdict(product: float, btyd: float, higher: bool) -> str:
    if not (math.isfinite(product) and math.isfinite(btyd)):
        return "–"
    good = product >= btyd if higher else product <= btyd
    return f"{'yes' if good else 'no'} ({_num(product)} / {_num(btyd)})"


def product_name(table: dict[str, Any]) -> str:
    """The row of the product's model (``training.pipeline.PRODUCT``)."""
    from training.pipeline import PRODUCT

    assert PRODUCT == PRODUCT_ROW
    return PRODUCT


def summary_row(table: dict[str, dict[str, float]]) -> list[str]:
    """The product's model against BG/NBD: AUC, Spearman, Gini, top-20% (>=), MAE (<=), level within +-10%."""
    p, b = table.get(product_name(table), {}), table.get(BTYD, {})
    cells = [_verdict(p.get(m, math.nan), b.get(m, math.nan), True) for m in HIGHER_IS_BETTER.values()]
    p_mae, b_mae = p.get("value_mae", math.nan), b.get("value_mae", math.nan)
    cells.append(
        "–"
        if not (math.isfinite(p_mae) and math.isfinite(b_mae))
        else f"{'yes' if p_mae <= b_mae else 'no'} ({p_mae:,.1f} / {b_mae:,.1f})"
    )
    p_level, b_level = p.get("value_total_ratio", math.nan), b.get("value_total_ratio", math.nan)
    cells += [_num(p_level), _num(b_level)]
    if not (math.isfinite(p_level) and math.isfinite(b_level)):
        cells.append("–")
    elif abs(b_level - 1) > LEVEL_TOLERANCE:
        cells.append("n/a (btyd off)" if abs(p_level - 1) > LEVEL_TOLERANCE else "yes (btyd off)")
    else:
        cells.append("yes" if abs(p_level - 1) <= LEVEL_TOLERANCE else "no")
    return cells


def _seed_values(runs: Sequence[dict[str, Any]], metric: str) -> list[float]:
    """``metric`` of the product's row in every successful seed (NaN where missing)."""
    return [r["rows"].get(PRODUCT_ROW, {}).get(metric, math.nan) for r in runs if r["status"] == "ok"]


PRODUCT_ROW = "model"
"""The product's row label in a run (``training.pipeline.PRODUCT``; read without importing training here)."""


def _within(values: Sequence[float], target: Sequence[float] | float) -> str:
    """Mean of ``values`` and how many seeds are within :data:`INTERVAL_TOLERANCE` of ``target`` (per seed)."""
    targets = list(target) if isinstance(target, Sequence) else [target] * len(values)
    pairs = [(v, t) for v, t in zip(values, targets, strict=True) if math.isfinite(v) and math.isfinite(t)]
    if not pairs:
        return "–"
    hits = sum(abs(v - t) <= INTERVAL_TOLERANCE + 1e-12 for v, t in pairs)
    return f"{_mean([v for v, _ in pairs]):.3f} ({hits}/{len(pairs)})"


def interval_row(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Coverage cells of one protocol: mean over seeds and (seeds within 3 points of the goal / seeds)."""
    cov = _seed_values(runs, "interval_coverage")
    promised = _seed_values(runs, "interval_promised")
    purchases = _seed_values(runs, "purchases_interval_coverage")
    purchases_promised = _seed_values(runs, "purchases_interval_promised")
    equity = [v for v in _seed_values(runs, "equity_covered") if math.isfinite(v)]
    return [
        _within(_seed_values(runs, "validation_interval_coverage"), _seed_values(runs, "validation_interval_promised")),
        _within(_seed_values(runs, "validation_interval_coverage_top_tier"), 0.8),
        _within(cov, 0.8),
        f"{_mean(promised):.3f}" if promised else "–",
        _within(cov, promised),
        _within(_seed_values(runs, "interval_coverage_attainable"), 0.8),
        _within(_seed_values(runs, "interval_coverage_top_tier"), 0.8),
        _num(_mean(_seed_values(runs, "value_total_ratio"))),
        _within(_seed_values(runs, "interval_coverage_top_tier_at_actual_level"), 0.8),
        _within(purchases, purchases_promised),
        f"{int(sum(equity))}/{len(equity)}" if equity else "–",
    ]


INTERVAL_HEADERS = (
    "at V: promised ±3",
    "at V: top tier 80 ±3",
    "all: 80 ±3",
    "promised",
    "all: promised ±3",
    "P(no purchase) ≤ 80%: 80 ±3",
    "top tier: 80 ±3",
    "level",
    "top tier at the actual level (diagnostic)",
    "purchase days: promised ±3",
    "equity inside",
)


def _status(runs: Sequence[dict[str, Any]]) -> str:
    ok = sum(r["status"] == "ok" for r in runs)
    if ok == len(runs):
        return "ok"
    bad = [r for r in runs if r["status"] != "ok"]
    head = "refused" if all(r["status"] == "refused" for r in bad) else bad[0]["status"]
    return f"{head} ({len(bad)}/{len(runs)} seeds)" if ok else head


def render(results: list[dict[str, Any]], args: argparse.Namespace, started: dt.datetime, uptime_start: str) -> str:
    from features.synthetic import SCENARIOS

    lines = [
        *common.run_header(
            "Quality scoreboard: the product's model vs BG/NBD + Gamma-Gamma vs naive", started, uptime_start
        ),
        "",
        f"Scenarios: {', '.join(args.scenarios)}; protocols: {', '.join(args.protocols)} (history before the as-of "
        f"date - horizon in days); {args.customers:,} generated customers per scenario; seeds "
        f"{', '.join(map(str, args.seeds))} (tables show means over the seeds that ran). See docs/quality.md.",
        "",
        "Each protocol generates history + horizon days of the scenario from its first day, puts the as-of date on "
        "the last day of the history and calls `training.jobs.evaluate_fold(prep, as_of, H, seed)`: the product's "
        '"model" is trained with data up to the as-of date only and every model is scored on the true next '
        "H days (churn = no purchase, value = net spend, refunds included). Level = total predicted / total actual.",
        "",
        "## Summary: the product's model against BG/NBD + Gamma-Gamma (btyd)",
        "",
        'The product\'s model is the "model" row (the heads and level source it chose are listed per protocol). '
        "Cells: better or equal? (product / btyd); MAE: no worse?; level ok: the product within ±10% where btyd is "
        '("btyd off": btyd itself is outside ±10%). All customers scored at the as-of date.',
        "",
    ]
    headers = [
        "scenario",
        "protocol",
        "as of",
        "status",
        "customers",
        "churn rate",
        *[f"{k} ≥" for k in HIGHER_IS_BETTER],
        "MAE ≤",
        "level product",
        "level btyd",
        "level ok",
    ]
    summary = []
    for res in results:
        table = aggregate(res["runs"])
        churn = table.get(product_name(table), {}).get("churn_churn_rate", math.nan)
        row = [
            res["scenario"],
            res["protocol"],
            str(res["runs"][0]["as_of"]),
            _status(res["runs"]),
            f"{_mean([r['data']['customers_at_as_of'] for r in res['runs']]):,.0f}",
            _num(churn),
        ]
        row += summary_row(table) if table else ["–"] * (len(headers) - len(row))
        summary.append(row)
    lines += [common.markdown_table(headers, summary), ""]
    lines += [
        "## Intervals: coverage of the product's 80% intervals",
        "",
        "Share of customers whose actual next-H-day value lies inside their 80% interval (`value_low`..`value_high`),"
        " as the mean over seeds and (seeds within ±3 points of the goal / seeds). With a point mass at 0 the smallest"
        " interval holding 80% holds the whole mass, so a customer with P(no purchase) = 95% has the interval {0},"
        " which holds 95%: a calibrated model covers the *promised* share, the mean of max(P(no purchase), 80%), not"
        " 80%. Goals: all customers within ±3 points of what is promised; exactly 80% ±3 where it is attainable"
        " (P(no purchase) ≤ 80%) and in the top tier. Level: total predicted / actual (the level forecast's error);"
        " diagnostic: the top tier's coverage once every interval is divided by it (known only afterwards), which"
        " separates a level miss from a miss of the intervals' shape. Purchase days: the interval of the number of"
        " purchase days"
        " (whole numbers, BG/NBD given a purchase). Equity: seeds whose actual total lies inside the 80% interval of"
        " the total. The first two columns are the cross-fitted coverage at the validation cutoff V = as-of − H"
        " (in distribution: the customers, level and season the intervals were calibrated on); the others are out"
        " of time, on the next H days.",
        "",
        common.markdown_table(
            ["scenario", "protocol", *INTERVAL_HEADERS],
            [[res["scenario"], res["protocol"], *interval_row(res["runs"])] for res in results],
        ),
        "",
    ]

    for name in args.scenarios:
        preset = SCENARIOS[name]
        lines += [f"## Scenario `{name}`", "", f"{preset.description} (first day {preset.start}).", ""]
        for res in (r for r in results if r["scenario"] == name):
            runs = res["runs"]
            d = runs[0]["data"]
            timings = ", ".join(f"{r['seconds']:.1f} s" for r in runs)
            lines += [
                f"### {name}, {res['protocol']}: {res['history']} days of history, as of {runs[0]['as_of']}, "
                f"horizon {res['horizon']} days",
                "",
                f"Data (seed {runs[0]['seed']}): {d['rows']:,} rows generated, {d['rows_without_id']:,} without "
                f"customer id dropped by the contract, {d['refunds']:,} refunds/cancellations kept; "
                f"{d['customers_at_as_of']:,} customers by the as-of date, {d['single_day_share']:.0%} of the "
                f"buyers bought on a single day. evaluate_fold: "
                f"{timings}.",
                "",
            ]
            for r in runs:
                if r["status"] != "ok":
                    lines += [f"- seed {r['seed']}: **{r['status']}**: {r['message']}", ""]
            table = aggregate(runs)
            main = {k: v for k, v in table.items() if " / " not in k}
            groups = {k: v for k, v in table.items() if " / " in k}
            if main:
                lines += [side_by_side(main), ""]
            if groups:
                lines += [
                    "Customer groups (rows `evaluate_fold` returned for parts of the population; key metrics):",
                    "",
                    side_by_side(groups, (*KEY_METRICS, "churn_churn_rate")),
                    "",
                ]
            for r in runs:
                for label, notes in r.get("annotations", {}).items():
                    if " / " in label:
                        continue
                    text = ", ".join(f"{k}={v}" for k, v in notes.items())
                    lines += [f"- {label} (seed {r['seed']}): {text}", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- entry point -------------------------------------------------------------------------------------------------


def resolve_runs(args: argparse.Namespace, parser: argparse.ArgumentParser, protocols: Sequence[str]) -> None:
    """``args.scenarios`` (default: every scenario; an unknown one is a usage error), ``args.protocols`` (default:
    ``protocols``) and ``args.parsed`` (their (history, horizon) days), in place."""
    from features.synthetic import SCENARIOS

    args.scenarios = args.scenarios or list(SCENARIOS)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    args.protocols = args.protocols or list(protocols)
    try:
        args.parsed = [parse_protocol(p) for p in args.protocols]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))


def protocol_jobs(args: argparse.Namespace) -> list[tuple[str, str, tuple[int, int]]]:
    """(scenario, protocol, (history days, horizon days)) for every scenario x protocol of ``args``."""
    return [(s, p, h) for s in args.scenarios for p, h in zip(args.protocols, args.parsed, strict=True)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from features.synthetic import SCENARIOS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=_csv, default=None, help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--protocols",
        type=_csv,
        default=None,
        help=f"comma-separated HISTORY-hHORIZON, e.g. 12m-h182 (default: {','.join(DEFAULT_PROTOCOLS)})",
    )
    parser.add_argument("--customers", type=int, default=None, help=f"customers per scenario ({DEFAULT_CUSTOMERS:,})")
    parser.add_argument(
        "--seeds", type=lambda v: [int(x) for x in _csv(v)], default=None, help="comma-separated seeds (0)"
    )
    parser.add_argument("--out", type=Path, default=None, help="results file (benchmarks/results/quality.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few customers, two protocols")
    args = parser.parse_args(argv)
    resolve_runs(args, parser, QUICK_PROTOCOLS if args.quick else DEFAULT_PROTOCOLS)
    args.customers = args.customers or (QUICK_CUSTOMERS if args.quick else DEFAULT_CUSTOMERS)
    args.seeds = args.seeds or [0]
    if args.out is None:
        args.out = common.RESULTS / ("quality-quick.md" if args.quick else "quality.md")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the scoreboard and write the results file; returns its path."""
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    uptime_start = common.uptime()
    jobs = protocol_jobs(args)
    total = len(jobs) * len(args.seeds)
    _log(
        f"quality scoreboard: {len(jobs)} scenario x protocol runs x {len(args.seeds)} seed(s), "
        f"{args.customers:,} customers"
    )
    results = []
    done = 0
    for scenario, protocol, (history, horizon) in jobs:
        runs = []
        for seed in args.seeds:
            done += 1
            t0 = time.perf_counter()
            run = run_one(scenario, history, horizon, args.customers, seed)
            runs.append(run)
            detail = run["status"] if run["status"] == "ok" else f"{run['status']}: {run['message'][:100]}"
            _log(f"[{done}/{total}] {scenario} {protocol} seed {seed}: {detail} ({time.perf_counter() - t0:.1f} s)")
        results.append(
            {"scenario": scenario, "protocol": protocol, "history": history, "horizon": horizon, "runs": runs}
        )
    text = render(results, args, started, uptime_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    _log(f"(written to {args.out})")
    return args.out


if __name__ == "__main__":
    main()
