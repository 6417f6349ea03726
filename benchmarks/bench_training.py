"""Training time and peak memory: ``training.pipeline.fit_pipeline`` at 100k and 1M customers.

    python benchmarks/bench_training.py [--work DIR] [--quick] [--limit-minutes M] [--sizes N,..] [--compare REV]

Data: ``retention generate --customers N --days 730 --seed 0`` (100,000 and 1,000,000 customers; ``--quick``:
100,000 only), made once in the work folder. Each size runs in its own process: read the Parquet file, the input
contract, ``index_transactions``, then ``fit_pipeline(prep, as_of=<last day>, horizon_days=90)`` (defaults: one
parameter set, all threads) -- the training run without MLflow logging. The time of each stage of ``fit_pipeline``
is recorded as it finishes, so a run stopped at the time limit (default 20 minutes per size, reading and contract
included) still tells how far it got and what it had cost.

``--compare REV`` measures side by side: per size, ``fit_pipeline`` of the commit REV (checked out with ``git worktree
add --detach`` into the work folder and imported ahead of this tree) and then of this tree, back to back in
separate processes on the same data, each row with the 1-minute load average at its start (the machine is shared:
only pairs run under similar load compare).

Also, in its own process: ``BTYDModel.fit`` (BG/NBD + Gamma-Gamma maximum likelihood) on 200,000 customers
simulated from the published CDNOW parameters (``tests/btyd_simulate.py``; continuous recency, so aggregating
identical summaries gains nothing), against a goal of 5 seconds. The fit time used to be a test assertion; timing
belongs here.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DAYS = 730
SIZES = (100_000, 1_000_000)
HORIZON = 90
STAGE_PREFIX = "STAGE "
BTYD_CUSTOMERS = 200_000
BTYD_GOAL_SECONDS = 5.0
"""``BTYDModel.fit`` on 200,000 customers should take less than this (wall seconds)."""


def phase_fit(args) -> None:
    if args.code:
        sys.path.insert(0, str(args.code))  # --compare: the other commit's packages ahead of this tree's
    import functools
    import json

    import pandas as pd

    import training.pipeline as pipeline
    from features.contract import prepare_transactions
    from features.kernel import index_transactions

    raw, s_read = common.timed(lambda: pd.read_parquet(args.data))
    (tx, _), s_contract = common.timed(lambda: prepare_transactions(raw, as_of=args.as_of))
    raw = None
    prep, s_prep = common.timed(lambda: index_transactions(tx))
    rows = len(tx)
    tx = None
    stages: dict[str, float] = {}
    started = time.perf_counter()

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed_call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                stages[label] = stages.get(label, 0.0) + time.perf_counter() - t0
                print(
                    STAGE_PREFIX
                    + json.dumps(
                        {
                            "stage": label,
                            "seconds": stages[label],
                            "elapsed": time.perf_counter() - started,
                            "peak_mb": common.peak_mb(),
                        }
                    ),
                    flush=True,
                )

        setattr(owner, name, timed_call)

    wrap(pipeline, "build_dataset", "features and labels at the training cutoffs")
    wrap(pipeline.heads, "fit_head", "LightGBM selection fits (early stopping), lightgbm + hybrid, both heads")
    wrap(pipeline.baselines, "fit_btyd", "BG/NBD + Gamma-Gamma fits (every cutoff, inside the features stage, + as-of)")
    wrap(pipeline.heads, "refit_head", "LightGBM refits on all rows, the chosen heads")
    wrap(pipeline, "compute_features", "features at the as-of date (tiers, drift reference)")
    print(
        STAGE_PREFIX
        + json.dumps(
            {
                "stage": "input ready",
                "seconds": 0.0,
                "elapsed": 0.0,
                "read_seconds": s_read.seconds,
                "contract_seconds": s_contract.seconds,
                "prepare_seconds": s_prep.seconds,
            }
        ),
        flush=True,
    )
    result, s_fit = common.timed(lambda: pipeline.fit_pipeline(prep, dt.date.fromisoformat(args.as_of), HORIZON))
    common.emit(
        {
            "rows": rows,
            "customers": int(prep.n_customers),
            "training_rows": result.training_rows,
            "cutoffs": len(result.plan.cutoffs),
            "churn_rounds": result.selection.get(f"churn_{result.choice['churn_head']}_rounds", 0),
            "value_rounds": result.selection.get(f"value_{result.choice['value_head']}_rounds", 0),
            "heads": f"{result.choice['churn_head']} / {result.choice['value_head']}",
            "auc": result.metrics["model"].get("churn_auc"),
            **s_read.as_dict("read_"),
            **s_contract.as_dict("contract_"),
            **s_prep.as_dict("prepare_"),
            **s_fit.as_dict("fit_"),
            "stages": stages,
        }
    )


def phase_btyd(args) -> None:
    """Fit BG/NBD + Gamma-Gamma on simulated CDNOW-like customers; emit the fit's time, peak memory and ``r``."""
    import numpy as np

    sys.path.insert(0, str(common.REPO / "tests"))
    from btyd_simulate import simulate_bgnbd, simulate_gamma_gamma

    from serving.btyd import BGNBDParams, BTYDModel, GammaGammaParams

    cdnow = BGNBDParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)  # Fader, Hardie & Lee 2005, alpha in days
    cdnow_gg = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    n = args.customers
    ages = np.random.default_rng(31).integers(90, 731, n).astype(np.float64)
    x, tx, big_t = simulate_bgnbd(cdnow, n, ages, seed=32)
    m = simulate_gamma_gamma(cdnow_gg, x, seed=33)
    model, step = common.timed(lambda: BTYDModel.fit(x, tx, big_t, m))
    common.emit(
        {
            "customers": n,
            "repeat_buyers": int((x > 0).sum()),
            "r": model.bgnbd.r,
            "true_r": cdnow.r,
            "warnings": len(model.warnings),
            **step.as_dict("fit_"),
        }
    )


def btyd_table(report, work: Path) -> None:
    """Run :func:`phase_btyd` in a child process and add its table to ``report``."""
    cmd = [sys.executable, __file__, "--phase", "btyd", "--customers", str(BTYD_CUSTOMERS), "--work", str(work)]
    res = common.run_measured(cmd, timeout=600)
    result = common.result_from(res["output"])
    if result is None:
        tail = res["output"].strip().splitlines()[-1][:200] if res["output"].strip() else ""
        rows = [[f"{BTYD_CUSTOMERS:,}", "", None, None, None, None, f"failed (exit {res['returncode']}): {tail}"]]
    else:
        goal = "met" if result["fit_seconds"] < BTYD_GOAL_SECONDS else "missed"
        rows = [
            [
                f"{result['customers']:,}",
                f"{result['repeat_buyers']:,}",
                result["fit_seconds"],
                result["fit_cpu_seconds"],
                result["fit_peak_mb"],
                f"{result['r']:.3f} (true {result['true_r']})",
                f"< {BTYD_GOAL_SECONDS:g} s: {goal}",
            ]
        ]
    report.table(
        "BTYDModel.fit (BG/NBD + Gamma-Gamma), simulated CDNOW customers",
        ["customers", "repeat buyers", "fit s", "fit CPU s", "fit peak RSS MiB", "fitted r", "goal"],
        rows,
        note="Ages uniform on 90..730 days, continuous recency (no two customers share a summary).",
    )


def stages_from(output: str) -> tuple[dict[str, float], dict]:
    import json

    stages: dict[str, float] = {}
    info: dict = {}
    for line in output.splitlines():
        if line.startswith(STAGE_PREFIX):
            item = json.loads(line[len(STAGE_PREFIX) :])
            if item["stage"] == "input ready":
                info = item
            else:
                stages[item["stage"]] = item["seconds"]
                info["last"] = item
    return stages, info


def compare_tree(work: Path, rev: str) -> tuple[str, Path]:
    """``rev``'s short hash and a worktree of it in ``work`` (made once per commit)."""
    import subprocess

    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=common.REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = work / f"tree-{sha}"
    if not tree.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), sha], cwd=common.REPO, check=True, capture_output=True
        )
    return sha, tree


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--limit-minutes", type=float, default=20.0, help="stop a size's process after this long")
    parser.add_argument("--sizes", help="comma-separated customer counts (default: 100000,1000000; --quick: 100000)")
    parser.add_argument("--data", type=Path, help=common.SUPPRESS)
    parser.add_argument("--as-of", help=common.SUPPRESS)
    parser.add_argument("--customers", type=int, default=BTYD_CUSTOMERS, help=common.SUPPRESS)
    parser.add_argument("--compare", metavar="REV", help="also time commit REV, back to back with this tree")
    parser.add_argument("--code", type=Path, help=common.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "btyd":
        phase_btyd(args)
        return
    if args.phase:
        phase_fit(args)
        return

    work: Path = args.work.resolve()
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else (SIZES[:1] if args.quick else SIZES)
    as_of = common.last_day(DAYS)
    report = common.Report("training" + ("-quick" if args.quick else ""), "Training: time and peak memory")
    if not args.compare:
        btyd_table(report, work)
    codes: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.compare:
        sha, tree = compare_tree(work, args.compare)
        codes.insert(0, (f"{sha} (--compare)", tree))
    rows_out, stage_rows, setup = [], [], []
    for customers, (code, tree) in [(c, v) for c in sizes for v in codes]:
        data, gen = common.ensure_dataset(work, customers, DAYS, seed=0)
        if gen:
            setup.append([f"`retention generate --customers {customers:,}`", gen["seconds"], gen["peak_mb"]])
        cmd = [sys.executable, __file__, "--phase", "fit", "--data", str(data), "--as-of", as_of, "--work", str(work)]
        if tree is not None:
            cmd += ["--code", str(tree)]
        limit = args.limit_minutes * 60
        load = os.getloadavg()[0]
        res = common.run_measured(cmd, timeout=limit)
        stages, info = stages_from(res["output"])
        result = common.result_from(res["output"])
        label = f"{customers:,} customers, {code}" if args.compare else f"{customers:,} customers"
        if result is not None:
            rows_out.append(
                [
                    label,
                    result["rows"],
                    result["training_rows"],
                    f"{result['heads']}: {result['churn_rounds']} / {result['value_rounds']}",
                    result["contract_seconds"] + result["read_seconds"],
                    result["prepare_seconds"],
                    result["fit_seconds"],
                    result["fit_cpu_seconds"],
                    result["fit_peak_mb"],
                    res["peak_mb"],
                    round(load, 1),
                    "finished",
                ]
            )
        else:
            last = info.get("last", {})
            tail = res["output"].strip().splitlines()[-1][:200] if res["output"].strip() else ""
            status = (
                f"stopped at the {args.limit_minutes:g}-minute limit"
                if res.get("timed_out")
                else f"failed (exit {res['returncode']}): {tail}"
            )
            done = f"; last finished stage: {last['stage']} at {last['elapsed']:.0f} s of fitting" if last else ""
            rows_out.append(
                [
                    label,
                    "",
                    "",
                    "",
                    info.get("read_seconds", 0.0) + info.get("contract_seconds", 0.0) if info else None,
                    info.get("prepare_seconds") if info else None,
                    None,
                    None,
                    last.get("peak_mb") if last else None,
                    res["peak_mb"],
                    round(load, 1),
                    status + done,
                ]
            )
        for stage, seconds in stages.items():
            stage_rows.append([label, stage, seconds])
        print(f"  {label}: {rows_out[-1]}", file=sys.stderr, flush=True)

    report.table(
        f"fit_pipeline, horizon {HORIZON} days, as of {as_of}",
        [
            "data",
            "transactions",
            "training rows",
            "chosen heads: rounds churn / value",
            "read + contract s",
            "prepare s",
            "fit_pipeline s",
            "fit CPU s",
            "fit peak RSS MiB",
            "process peak MiB",
            "load (1 min) at start",
            "status",
        ],
        rows_out,
        note="""
"fit peak RSS" is the process's resident high-water mark while `fit_pipeline` ran (the prepared arrays already in
memory; the contract's frames freed); "process peak" is the whole process (`ru_maxrss`), reading and the contract
included. CPU seconds count both cores (LightGBM trains on all threads).
""",
    )
    report.table(
        "Where fit_pipeline's time goes (stages as they finished)",
        ["data", "stage", "seconds"],
        stage_rows,
    )
    if setup:
        report.table("Set-up done in this run", ["step", "seconds", "peak RSS MiB"], setup)
    report.write()


if __name__ == "__main__":
    main()
