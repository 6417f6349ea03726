"""Cost of the online reasons (TreeSHAP, LightGBM ``pred_contrib``) against the churn head's tree shape.

    python benchmarks/bench_explain.py [--customers N] [--repeats R]

Every ``/predict`` explains the churn head of each customer it scores; TreeSHAP costs about leaves x depth^2 per
tree, so the tree shape decides most of a by-id request's model time. For each shape this trains the churn head
the way ``training.pipeline`` does (selection fit with early stopping on the validation cutoff, refit on every
cutoff), reports its validation AUC, and times ``pred_contrib`` and plain ``predict`` on single rows with one
thread (as the service calls them), interleaving the shapes ``--repeats`` times so that machine noise hits all
of them alike. Results go to ``benchmarks/results/explain.md``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SHAPES = {
    "31 leaves, unbounded depth (LightGBM default)": {"max_depth": -1, "num_leaves": 31},
    "31 leaves, depth <= 6": {"max_depth": 6, "num_leaves": 31},
    "31 leaves, depth <= 5": {"max_depth": 5, "num_leaves": 31},
    "15 leaves, depth <= 5 (the churn head's default)": {"max_depth": 5, "num_leaves": 15},
    "15 leaves, depth <= 4": {"max_depth": 4, "num_leaves": 15},
}
ROWS = 200


def main() -> None:
    import datetime as dt

    import numpy as np

    from features.kernel import index_transactions
    from features.synthetic import generate_transactions
    from training import heads
    from training.dataset import build_dataset, plan_training
    from training.metrics import churn_metrics

    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    days, horizon = 730, 90
    as_of = dt.date.fromisoformat(common.last_day(days))
    prep = index_transactions(generate_transactions(args.customers, days, seed=0, start=common.START_DATE))
    plan = plan_training(prep, as_of, horizon)
    data = build_dataset(prep, list(plan.cutoffs), horizon)
    columns = prep.columns
    train = data[data["cutoff"].isin(plan.selection_cutoffs)]
    valid = data[data["cutoff"] == plan.validation_cutoff].reset_index(drop=True)
    X = valid[columns].to_numpy(np.float64)
    y = valid["churned"].to_numpy(np.float64)
    rows = [X[i : i + 1].copy() for i in range(min(ROWS, len(X)))]

    fitted = {}
    for name, shape in SHAPES.items():
        head = heads.fit_head(train, valid, columns, kind="churn", overrides=shape)
        auc = churn_metrics(y, head.booster.predict(X, num_iteration=head.best_iteration))["auc"]
        fitted[name] = (heads.refit_head(data, columns, head, kind="churn"), head.best_iteration, auc)

    contrib: dict[str, list[float]] = {name: [] for name in SHAPES}
    plain: dict[str, list[float]] = {name: [] for name in SHAPES}
    for _ in range(args.repeats):
        for name, (booster, _, _) in fitted.items():
            for out, kwargs in ((contrib, {"pred_contrib": True}), (plain, {})):
                started = time.perf_counter()
                for row in rows:
                    booster.predict(row, num_threads=1, **kwargs)
                out[name].append((time.perf_counter() - started) / len(rows) * 1e3)

    base = "31 leaves, unbounded depth (LightGBM default)"
    base_ms = float(np.median(contrib[base]))
    table = []
    for name, (booster, rounds, auc) in fitted.items():
        ms = float(np.median(contrib[name]))
        table.append(
            [
                name,
                rounds,
                booster.num_trees(),
                f"{auc:.4f}",
                f"{ms:.3f}",
                f"{float(np.median(plain[name])):.3f}",
                f"{ms / base_ms:.2f}x",
            ]
        )
    report = common.Report("explain", "Online reasons: TreeSHAP cost against the churn head's tree shape")
    report.table(
        f"{args.customers:,} generated customers, {days} days, as-of {as_of}, horizon {horizon} days",
        [
            "churn head trees",
            "rounds (early stopping)",
            "trees",
            "validation AUC",
            "pred_contrib ms/row",
            "predict ms/row",
            "pred_contrib vs default",
        ],
        table,
        note=f"""
        Median over {args.repeats} interleaved passes of {len(rows)} single-row calls with ``num_threads=1``
        (the service's call). Validation AUC is the selection model's at the validation cutoff
        {plan.validation_cutoff}.
        """,
    )
    report.write()


if __name__ == "__main__":
    main()
