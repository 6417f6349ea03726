"""Batch scoring end to end vs the sum of its parts, on 10M transactions / 500k customers.

    python benchmarks/bench_batch.py [--work DIR] [--quick] [--customers N] [--partitions P] [--reference FILE]
                                     [--top-k K] [--reasons all,top-k,none] [--contrib-variants]

Data: ``retention generate --customers 500000 --days 730 --seed 0`` (``--quick``: 50,000 customers), made once in
the work folder. Model: ``retention train`` on 20,000 customers of the same generator (seed 1, same days) as of the
last day, horizon 90, tracked in a sqlite MLflow store of the work folder; scored as ``models:/retention@champion``.

Measured in one run, each in its own process:

- *parts*: the feature kernel alone (``index_transactions`` + ``compute_feature_arrays`` on the contract's output,
  at the as-of date) and raw LightGBM alone on the resulting 500k-row matrix: churn ``predict``, value ``predict`` and
  churn ``pred_contrib`` (what the reason codes need), all threads;
- *job (API)*: ``serving.batch.run_score_job`` from the raw Parquet file to the ranked Parquet output (model
  already loaded), with a breakdown of where its time goes;
- *job (CLI)*: ``retention score -t FILE --as-of DAY --out scores.parquet --no-record --model models:/...``
  as a user runs it (interpreter start, imports and model loading included).

- *reasons modes* (``--reasons``, default ``all,top-k,none``): the API job again per mode, each in its own
  process: ``all`` is the run above (every customer explained), ``top-k`` a ``--top-k K`` list (default K = 50,000)
  with the default reasons (only the written rows explained, after the rank), ``none`` the full list without reasons;
  the top-K output is checked against the first K rows of the ``all`` output (exact, every column);
- ``--contrib-variants``: churn ``pred_contrib`` on the whole matrix with all threads vs one thread vs in 8 chunks
  (exactness checked), to choose how the job calls it.

``--customers N`` scales the data set (results then go to ``batch-cN.md``).

Goals (issue): the whole job within 1.5x of its parts; 500k customers with reasons in every row <= 60 s on 2 cores;
a top-50k list <= 20 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DAYS = 730
FULL_CUSTOMERS = 500_000
QUICK_CUSTOMERS = 50_000
MODEL_CUSTOMERS = 20_000
GOAL = 1.5


# --- phases (child processes) ------------------------------------------------------------------------------------


def phase_parts(args) -> None:
    import numpy as np

    from features.kernel import compute_feature_arrays, index_transactions
    from serving.loader import load_model
    from serving.scoring import feature_matrix

    as_of = common.last_day(DAYS)
    tx = common.load_contract_frame(args.data, as_of)
    rows = len(tx)
    prep, s_prep = common.timed(lambda: index_transactions(tx))
    (ids, arrays), s_comp = common.timed(lambda: compute_feature_arrays(prep, as_of))
    prep = tx = None  # free the input before the model part
    model = load_model(common.MODEL_URI)
    names = model.feature_columns
    n = len(ids)
    X, s_matrix = common.timed(lambda: feature_matrix(arrays, names, n))
    arrays = None
    X = np.ascontiguousarray(X, dtype=np.float64)
    _, s_churn = common.timed(lambda: model.churn_booster.predict(X, num_threads=0))
    _, s_value = common.timed(lambda: model.value_booster.predict(X, num_threads=0))
    contrib, s_contrib = common.timed(lambda: model.churn_booster.predict(X, pred_contrib=True, num_threads=0))
    variants = {}
    if args.contrib_variants:

        def chunked() -> np.ndarray:
            pieces = np.array_split(np.arange(len(X)), 8)
            return np.concatenate([model.churn_booster.predict(X[i], pred_contrib=True, num_threads=0) for i in pieces])

        for label, fn in (
            ("one thread", lambda: model.churn_booster.predict(X, pred_contrib=True, num_threads=1)),
            ("8 chunks, all threads", chunked),
        ):
            out, step = common.timed(fn)
            variants[label] = {"seconds": step.seconds, "identical": bool(np.array_equal(out, contrib))}
    common.emit(
        {
            "rows": rows,
            "customers": n,
            "features": len(names),
            "trees_churn": model.churn_booster.num_trees(),
            "trees_value": model.value_booster.num_trees(),
            **s_prep.as_dict("prepare_"),
            **s_comp.as_dict("compute_"),
            **s_matrix.as_dict("matrix_"),
            **s_churn.as_dict("churn_"),
            **s_value.as_dict("value_"),
            **s_contrib.as_dict("contrib_"),
            "contrib_variants": variants,
        }
    )


def phase_job_api(args) -> None:
    """``run_score_job`` in process, with the time spent in its main callees (wrapped, summed over partitions)."""
    import functools

    import serving.batch as batch
    from serving.loader import load_model

    spent: dict[str, float] = {}

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def timed_call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed_call)

    import features.sources as sources

    model = load_model(common.MODEL_URI)
    for owner, name, label in (
        (batch, "read_table", "read input (in-memory split)"),
        (batch, "partition_of", "partition hash"),
        (batch, "spool", "spool input to partition files"),
        (batch, "prepare_transactions", "contract"),
        (batch, "index_transactions", "kernel: index transactions"),
        (batch, "compute_feature_arrays", "kernel: features"),
        (batch, "feature_matrix", "feature matrix"),
        (model, "score", "LightGBM churn + value predict (+ calibration)"),
        (model, "churn_contributions", "LightGBM pred_contrib"),
        (batch, "score_customers", "score customers (predict, tiers, segments, pred_contrib)"),
        (batch, "output_columns", "output columns (reason texts)"),
        (batch, "explain_rows", "explain the written rows (after the rank)"),
        (batch, "_write_part", "write part files"),
        (batch, "finish_ranking", "rank"),
        (batch, "write_output", "write output"),
        (sources, "write_frame", "write output"),
    ):
        wrap(owner, name, label)
    as_of = common.last_day(DAYS)
    out = args.work / (args.out_name or "scores_api.parquet")
    summary, step = common.timed(
        lambda: batch.run_score_job(
            str(args.data), as_of, str(out), model, partitions=args.partitions, top_k=args.top_k, reasons=args.reasons
        )
    )
    common.emit(
        {
            "customers": summary.customers_scored,
            "rows_read": summary.report.rows_read,
            "partitions": summary.partitions,
            "rows_written": summary.rows_written,
            **step.as_dict("job_"),
            "breakdown": spent,
        }
    )


# --- orchestration -----------------------------------------------------------------------------------------------


def reasons_modes(args, report, phase_args: list[str], env: dict[str, str], api: dict, parts: dict) -> list[list[str]]:
    """The ``--reasons`` modes side by side (``all`` = the API run above), each API job in its own process; the
    ``pred_contrib`` variants when measured. Returns the output checks."""
    modes = [m for m in (args.reasons or "all,top-k,none").split(",") if m]
    k = args.top_k or 50_000
    runs: dict[str, dict] = {"all": api} if "all" in modes else {}
    for mode in modes:
        if mode == "all":
            continue
        extra = ["--reasons", mode, "--out-name", f"scores_api_{mode}.parquet"]
        if mode == "top-k":
            extra += ["--top-k", str(k)]
        runs[mode] = common.run_phase(__file__, "job-api", phase_args + extra, env=env)
    rows = []
    for mode, run in runs.items():
        explain = run["breakdown"].get("explain the written rows (after the rank)", 0.0)
        contrib = run["breakdown"].get("LightGBM pred_contrib", 0.0)
        rows.append(
            [
                f"`--reasons {mode}`" + (f" `--top-k {k:,}`" if mode == "top-k" else ""),
                run["rows_written"],
                run["job_seconds"],
                contrib,
                explain,
                run["job_peak_mb"],
            ]
        )
    report.table(
        f"Reasons modes ({api['customers']:,} customers, API job, {args.partitions} partitions)",
        ["mode", "rows written", "job seconds", "of which pred_contrib", "of which explain after rank", "peak RSS MiB"],
        rows,
        note="""
`pred_contrib` is summed over every call (in the partitions and after the rank); `explain after rank` is the
whole of `explain_rows` (predict, TreeSHAP and reason texts of the written rows).
""",
    )
    if parts.get("contrib_variants"):
        report.table(
            f"Churn pred_contrib on {parts['customers']:,} rows: call variants",
            ["variant", "seconds", "identical to one call, all threads"],
            [["one call, all threads", parts["contrib_seconds"], "-"]]
            + [
                [label, v["seconds"], "yes" if v["identical"] else "NO"]
                for label, v in parts["contrib_variants"].items()
            ],
        )
    checks = []
    if "top-k" in runs and "all" in runs:
        top = compare_outputs(
            args.work.resolve() / "scores_api_top-k.parquet", args.work.resolve() / "scores_api.parquet", k
        )
        checks.append([f"top-k output vs first {k:,} rows of the `all` output", top])
    return checks


def compare_outputs(a: Path, b: Path, head: int | None = None) -> str:
    """``identical`` when the two outputs are equal exactly (``head``: ``a`` against the first rows of ``b``)."""
    import pandas as pd

    if not a.exists() or not b.exists():
        return "n/a"
    x, y = pd.read_parquet(a), pd.read_parquet(b)
    if head is not None:
        y = y.head(head)
    try:
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    except AssertionError as exc:
        return "DIFFERENT: " + str(exc).splitlines()[0]
    return "identical"


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=None, help="partitions of the API run (default: the job's)")
    parser.add_argument("--reference", type=Path, help="a scores file to compare the outputs with (exact)")
    parser.add_argument("--customers", type=int, help="customers of the data set (default 500,000; --quick 50,000)")
    parser.add_argument("--top-k", type=int, default=None, help="K of the top-k reasons mode (default 50,000)")
    parser.add_argument("--reasons", default=None, help="reasons modes to measure, comma-separated (all,top-k,none)")
    parser.add_argument("--contrib-variants", action="store_true", help="time pred_contrib threads and chunks")
    parser.add_argument("--out-name", help=common.SUPPRESS)
    parser.add_argument("--data", type=Path, help=common.SUPPRESS)
    args = parser.parse_args()
    if args.partitions is None:
        from serving.batch import DEFAULT_PARTITIONS

        args.partitions = DEFAULT_PARTITIONS
    if args.phase:
        args.reasons = args.reasons or "all"
        {"parts": phase_parts, "job-api": phase_job_api}[args.phase](args)
        return

    work: Path = args.work.resolve()
    customers = args.customers or (QUICK_CUSTOMERS if args.quick else FULL_CUSTOMERS)
    name = f"batch-c{customers}" if args.customers else "batch" + ("-quick" if args.quick else "")
    report = common.Report(name, "Batch scoring: whole job vs its parts")
    data, gen = common.ensure_dataset(work, customers, DAYS, seed=0)
    _, trained = common.ensure_model(work, MODEL_CUSTOMERS, DAYS, seed=1)
    env = common.mlflow_env(work, MODEL_CUSTOMERS)
    as_of = common.last_day(DAYS)
    common.load_contract_frame(data, as_of)  # cache the kernel's input outside the measurements

    phase_args = ["--work", str(work), "--data", str(data), "--partitions", str(args.partitions)]
    parts_args = phase_args + (["--contrib-variants"] if args.contrib_variants else [])
    parts = common.run_phase(__file__, "parts", parts_args, env=env)
    api = common.run_phase(__file__, "job-api", phase_args, env=env)
    cli_out = work / "scores_cli.parquet"
    cli = common.run_measured(
        [
            *common.retention_cmd(),
            "score",
            "-t",
            str(data),
            "--as-of",
            as_of,
            "--out",
            str(cli_out),
            "--no-record",
            "--model",
            common.MODEL_URI,
        ],
        env=env,
        cwd=work,
    )
    if cli["returncode"] != 0:
        raise RuntimeError(f"retention score failed:\n{cli['output'][-3000:]}")

    kernel = parts["prepare_seconds"] + parts["compute_seconds"]
    lgb = parts["churn_seconds"] + parts["value_seconds"] + parts["contrib_seconds"]
    total_parts = kernel + lgb
    rows = parts["rows"]
    n = parts["customers"]
    table = [
        ["feature kernel: prepare", parts["prepare_seconds"], parts["prepare_peak_mb"], "", ""],
        ["feature kernel: features at the as-of date", parts["compute_seconds"], parts["compute_peak_mb"], "", ""],
        ["LightGBM churn predict", parts["churn_seconds"], parts["churn_peak_mb"], "", ""],
        ["LightGBM value predict", parts["value_seconds"], parts["value_peak_mb"], "", ""],
        ["LightGBM churn pred_contrib", parts["contrib_seconds"], parts["contrib_peak_mb"], "", ""],
        ["**sum of parts**", total_parts, "", "1.00", f"{rows / total_parts / 1e6:.2f}"],
        [
            f"job, Python API (`run_score_job`, {api['partitions']} partitions)",
            api["job_seconds"],
            api["job_peak_mb"],
            f"{api['job_seconds'] / total_parts:.2f}",
            f"{rows / api['job_seconds'] / 1e6:.2f}",
        ],
        [
            "job, CLI (`retention score ... --no-record`, default partitions)",
            cli["seconds"],
            cli["peak_mb"],
            f"{cli['seconds'] / total_parts:.2f}",
            f"{rows / cli['seconds'] / 1e6:.2f}",
        ],
    ]
    verdict = "meets" if api["job_seconds"] <= GOAL * total_parts else "MISSES"
    report.table(
        f"{rows:,} transactions, {n:,} customers, as of {as_of}",
        ["step", "seconds", "peak RSS MiB", "x sum of parts", "M tx/s"],
        table,
        note=f"""
Parts are measured in one process on the contract's output (cached Parquet, {parts["features"]} features;
the model has {parts["trees_churn"]} churn and {parts["trees_value"]} value trees). Peak RSS of a part is the
high-water mark while that part ran, input already in memory; the job's peak RSS (API) is the same for the
whole job, the CLI's is the whole process (`ru_maxrss`). Process peaks: parts {parts["process_peak_mb"]:,.0f} MiB,
API job {api["process_peak_mb"]:,.0f} MiB.

**Goal: job within {GOAL}x of its parts -- the API job {verdict} it ({api["job_seconds"] / total_parts:.2f}x).**
""",
    )
    spent = dict(sorted(api["breakdown"].items(), key=lambda kv: -kv[1]))
    rows_b = [[k, v, f"{v / api['job_seconds']:.0%}", f"{v / total_parts:.2f}"] for k, v in spent.items()]
    report.table(
        "Where the API job's time goes",
        ["callee (summed over partitions)", "seconds", "share of job", "x sum of parts"],
        rows_b,
        note="""
Wrapped callees overlap: `score table` contains the LightGBM predict; `partition hash` runs inside the input
split; the rest of the job (splitting, concatenation, drift counts, reading the part files back) is untimed glue.
""",
    )
    checks = [["API output vs CLI output", compare_outputs(work / "scores_api.parquet", cli_out)]]
    checks += reasons_modes(args, report, phase_args, env, api, parts)
    if args.reference:
        checks.append([f"CLI output vs {args.reference.name}", compare_outputs(cli_out, args.reference)])
    report.table("Output checks", ["check", "result"], checks)
    extra = []
    if gen:
        extra.append(["`retention generate` (data set)", gen["seconds"], gen["peak_mb"]])
    if trained:
        extra.append(
            [f"`retention train` on {MODEL_CUSTOMERS:,} customers (model)", trained["seconds"], trained["peak_mb"]]
        )
    if extra:
        report.table("Set-up done in this run (not part of the comparison)", ["step", "seconds", "peak RSS MiB"], extra)
    report.write()


if __name__ == "__main__":
    main()
