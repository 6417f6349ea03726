"""Feature kernel throughput and memory on 10M generated transactions, one cutoff, against pandas and DuckDB.

    python benchmarks/bench_kernel.py [--work DIR] [--quick] [--skip-spool] [--repeat N]
    python benchmarks/bench_kernel.py --end-to-end [--before DIR] [--repeat N] [--work DIR]

Data: ``retention generate --customers 500000 --days 730 --seed 0`` (about 10.1M rows; ``--quick``: 50,000
customers, about 1M rows), saved once as Parquet in the work folder and reused; the cutoff is the last day.

Measured in one run, each engine in its own process on the same input already in memory (the contract's output,
cached as Parquet next to the data):

- the contract (``features.contract.prepare_transactions``) on the raw file, separately;
- our kernel: ``index_transactions`` + ``compute_feature_arrays`` at the cutoff (all 36 features);
- a straightforward pandas ``groupby`` implementation of a comparable subset (16 features);
- DuckDB SQL of the same subset (when ``duckdb`` is importable; it is not a project dependency:
  ``pip install duckdb`` into the virtualenv for this benchmark), with all threads and with one thread.

The pandas and DuckDB results are checked against the kernel's (column sums and customer counts).
End to end (``--end-to-end``, issue #11): ``retention features -t FILE --as-of D -o OUT`` on 5M generated
transactions (250,000 customers) against DuckDB reading the same Parquet file and writing the subset's features
to Parquet (``COPY (SELECT ...) TO``), each a whole fresh process, alternated A B A B for ``--repeat`` pairs, with
the load average beside every run; ``--before DIR`` adds a third command, the same CLI run from an older checkout
of the project (``git archive <commit> | tar -x -C DIR``), so before/after/DuckDB are measured in one run.

Then the partitioned batch path: peak RSS of ``retention score --spool --partitions 16`` vs ``--in-memory`` on the
same file. That part needs a model: one is trained on 20,000 customers of the same generator (see
``bench_batch.py``) and cut to its first few trees, because the comparison is about the input's memory and the
reason codes' ``pred_contrib`` would otherwise take most of the time (``--skip-spool`` leaves the part out).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DAYS = 730
FULL_CUSTOMERS = 500_000
QUICK_CUSTOMERS = 50_000
MODEL_CUSTOMERS = 20_000
E2E_CUSTOMERS = 250_000
GOAL_E2E_RATIO = 1.5
GOAL_M_TX_PER_S = 3.0
SPOOL_TREES = 5
NS_PER_DAY = 86_400 * 10**9
WINDOWS = (30, 90, 365)
SUBSET = (
    "recency_days",
    "tenure_days",
    "n_purchase_days",
    "n_transactions",
    "net_spend",
    "gross_spend",
    "mean_amount",
    "max_amount",
    "std_amount",
    *(f"tx_{w}d" for w in WINDOWS),
    *(f"spend_{w}d" for w in WINDOWS),
    "refund_count",
)


def checksums(columns: dict, n: int) -> dict:
    import numpy as np

    out = {"customers": int(n)}
    for name in SUBSET:
        values = np.asarray(columns[name], dtype=np.float64)
        out[name] = [float(np.nansum(values)), int(np.count_nonzero(np.isnan(values)))]
    return out


# --- engines -----------------------------------------------------------------------------------------------------


def pandas_subset(tx, cutoff_day: int):
    """What an analyst would write: one groupby per group of features, joined on the customer id."""
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(
        {
            "customer_id": tx["customer_id"],
            "day": tx["timestamp"].dt.tz_convert(None).to_numpy().view(np.int64) // NS_PER_DAY,
            "amount": tx["amount"],
        }
    )
    df = df[df["day"] <= cutoff_day]
    buy = df[df["amount"] >= 0]
    out = df.groupby("customer_id", sort=False).agg(first_day=("day", "min"), net_spend=("amount", "sum"))
    purchases = buy.groupby("customer_id", sort=False).agg(
        n_transactions=("amount", "size"),
        gross_spend=("amount", "sum"),
        mean_amount=("amount", "mean"),
        max_amount=("amount", "max"),
        var_amount=("amount", "var"),
        first_purchase=("day", "min"),
        last_purchase=("day", "max"),
        n_purchase_days=("day", "nunique"),
    )
    out = out.join(purchases)
    for w in WINDOWS:
        out[f"tx_{w}d"] = buy[buy["day"] > cutoff_day - w].groupby("customer_id", sort=False).size()
        out[f"spend_{w}d"] = df[df["day"] > cutoff_day - w].groupby("customer_id", sort=False)["amount"].sum()
    out["refund_count"] = df[df["amount"] < 0].groupby("customer_id", sort=False).size()
    counts = ["n_transactions", "gross_spend", "n_purchase_days", "refund_count"]
    counts += [f"tx_{w}d" for w in WINDOWS] + [f"spend_{w}d" for w in WINDOWS]
    out[counts] = out[counts].fillna(0.0)
    n_tx = out["n_transactions"]
    out["std_amount"] = np.sqrt(out["var_amount"].fillna(0.0) * (n_tx - 1) / n_tx)  # population std
    out["recency_days"] = cutoff_day - out["last_purchase"]
    out["tenure_days"] = cutoff_day - out["first_day"]
    return out


def duckdb_subset(tx, cutoff_day: int, threads: int):
    import duckdb
    import pyarrow as pa

    arrow_tx = pa.Table.from_pandas(tx[["customer_id", "timestamp", "amount"]], preserve_index=False)  # noqa: F841
    con = duckdb.connect(config={"threads": threads})
    sql = duckdb_features_sql("arrow_tx", cutoff_day)
    result = con.sql(sql).arrow()
    if hasattr(result, "read_all"):  # duckdb >= 1.4 returns a RecordBatchReader
        result = result.read_all()
    con.close()
    return result


def duckdb_features_sql(source: str, cutoff_day: int) -> str:
    """The kernel's features at ``cutoff_day`` (days since the epoch) as one DuckDB query over ``source`` (a table
    name or a ``read_parquet(...)`` call): the comparison query of every DuckDB figure here."""
    windows = ",\n".join(
        f"count(*) FILTER (WHERE amount >= 0 AND day > {cutoff_day - w}) AS tx_{w}d,\n"
        f"coalesce(sum(amount) FILTER (WHERE day > {cutoff_day - w}), 0) AS spend_{w}d"
        for w in WINDOWS
    )
    return f"""
        WITH t AS (
            SELECT customer_id, epoch_ns(timestamp) // {NS_PER_DAY} AS day, amount FROM {source}
        )
        SELECT customer_id,
            {cutoff_day} - max(day) FILTER (WHERE amount >= 0) AS recency_days,
            {cutoff_day} - min(day) AS tenure_days,
            count(DISTINCT day) FILTER (WHERE amount >= 0) AS n_purchase_days,
            count(*) FILTER (WHERE amount >= 0) AS n_transactions,
            sum(amount) AS net_spend,
            coalesce(sum(amount) FILTER (WHERE amount >= 0), 0) AS gross_spend,
            avg(amount) FILTER (WHERE amount >= 0) AS mean_amount,
            max(amount) FILTER (WHERE amount >= 0) AS max_amount,
            stddev_pop(amount) FILTER (WHERE amount >= 0) AS std_amount,
            {windows},
            count(*) FILTER (WHERE amount < 0) AS refund_count
        FROM t WHERE day <= {cutoff_day}
        GROUP BY customer_id
    """


def duckdb_file_sql(data: Path, out: Path, cutoff_day: int) -> str:
    """DuckDB SQL for the subset's features read straight from the Parquet file and written to Parquet."""
    source = str(data).replace("'", "''")
    target = str(out).replace("'", "''")
    query = duckdb_features_sql(f"read_parquet('{source}')", cutoff_day)
    return f"COPY ({query}) TO '{target}' (FORMAT parquet)"


# --- phases ------------------------------------------------------------------------------------------------------


def phase_contract(args) -> None:
    import pandas as pd

    from features.contract import prepare_transactions

    raw, s_read = common.timed(lambda: pd.read_parquet(args.data))
    rows = len(raw)
    (tx, report), s_contract = common.timed(lambda: prepare_transactions(raw, as_of=args.as_of))
    raw = None
    cache = common.contract_cache(args.data, args.as_of)
    if not cache.exists():
        common.save_contract_frame(tx, cache)
    common.emit({"rows": rows, "valid": report.rows_valid, **s_read.as_dict("read_"), **s_contract.as_dict()})


def phase_kernel(args) -> None:
    import time

    from features.kernel import compute_feature_arrays, index_transactions

    tx = common.load_contract_frame(args.data, args.as_of)
    runs = []
    for _ in range(args.repeat):
        with common.Step() as step:
            t0 = time.perf_counter()
            prep = index_transactions(tx)
            t1 = time.perf_counter()
            ids, arrays = compute_feature_arrays(prep, args.as_of)
            t2 = time.perf_counter()
        runs.append({**step.as_dict(), "prepare_seconds": t1 - t0, "compute_seconds": t2 - t1})
        prep = None
    common.emit(
        {
            "rows": len(tx),
            "features": len(arrays),
            **best_of(runs),
            "prepare_seconds": min(runs, key=lambda r: r["seconds"])["prepare_seconds"],
            "compute_seconds": min(runs, key=lambda r: r["seconds"])["compute_seconds"],
            "checksums": checksums(arrays, len(ids)),
        }
    )


def best_of(runs: list[dict]) -> dict:
    """Fastest run's times; memory of the first run (a fresh process: later runs reuse freed heap pages)."""
    best = min(runs, key=lambda r: r["seconds"])
    return {
        "seconds": best["seconds"],
        "cpu_seconds": best["cpu_seconds"],
        "peak_mb": runs[0]["peak_mb"],
        "start_mb": runs[0]["start_mb"],
        "runs": [r["seconds"] for r in runs],
        "cpu_runs": [r["cpu_seconds"] for r in runs],
    }


def phase_pandas(args) -> None:
    from features.kernel import date_to_day

    tx = common.load_contract_frame(args.data, args.as_of)
    out, step = common.timed(lambda: pandas_subset(tx, date_to_day(args.as_of)))
    common.emit({"rows": len(tx), **step.as_dict(), "checksums": checksums(out, len(out))})


def phase_duckdb(args) -> None:
    from features.kernel import date_to_day

    tx = common.load_contract_frame(args.data, args.as_of)
    runs = []
    for _ in range(args.repeat):
        out, step = common.timed(lambda: duckdb_subset(tx, date_to_day(args.as_of), args.threads))
        runs.append(step.as_dict())
    cols = {name: out[name].to_numpy(zero_copy_only=False) for name in SUBSET}
    common.emit({"rows": len(tx), **best_of(runs), "checksums": checksums(cols, out.num_rows)})


def phase_duckdb_file(args) -> None:
    """DuckDB end to end: the Parquet file in, the subset's features out (timed against ``retention features``)."""
    import duckdb

    from features.kernel import date_to_day

    con = duckdb.connect(config={"threads": args.threads or (os.cpu_count() or 1)})
    con.execute(duckdb_file_sql(args.data, args.out, date_to_day(args.as_of)))
    con.close()
    common.emit({"out": str(args.out)})


def end_to_end(args, report, work: Path) -> None:
    """``retention features`` vs DuckDB (and the CLI of an older checkout) on one file, alternated, load beside each."""
    import statistics

    data, gen = common.ensure_dataset(work, E2E_CUSTOMERS, DAYS, seed=0)
    as_of = common.last_day(DAYS)
    # (command, environment, working folder): ``python -m`` puts the working folder first on sys.path
    commands: dict[str, tuple[list[str], dict[str, str] | None, Path]] = {}
    cli = ["features", "-t", str(data), "--as-of", as_of, "-o", str(work / "e2e_features.parquet")]
    commands["retention features (this tree)"] = ([*common.retention_cmd(), *cli], None, common.REPO)
    if args.before:
        env = dict(os.environ, PYTHONPATH=str(args.before.resolve()))
        cli_before = [*cli[:-1], str(work / "e2e_features_before.parquet")]
        before = args.before.resolve()
        commands[f"retention features ({args.before.name})"] = ([*common.retention_cmd(), *cli_before], env, before)
    duck_out = work / "e2e_duckdb.parquet"
    duck = [sys.executable, __file__, "--phase", "duckdb-file", "--data", str(data), "--as-of", as_of]
    threads = os.cpu_count() or 1
    commands[f"DuckDB SQL, Parquet file to Parquet file ({threads} threads)"] = (
        [*duck, "--out", str(duck_out)],
        None,
        common.REPO,
    )
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, (cmd, env, cwd) in commands.items():
            load = common.load_average()
            res = common.run_measured(cmd, env=env, cwd=cwd)
            if res["returncode"] != 0:
                raise RuntimeError(f"{name} failed:\n{res['output'][-3000:]}")
            runs[name].append({**res, "load": load})
    names = list(commands)
    same = ""
    if args.before:
        import pandas as pd

        equal = pd.read_parquet(work / "e2e_features.parquet").equals(
            pd.read_parquet(work / "e2e_features_before.parquet")
        )
        same = f" The two checkouts' feature files are {'identical' if equal else 'DIFFERENT'} (`DataFrame.equals`)."
    ours, duck_name = names[0], names[-1]
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs[ours], runs[duck_name], strict=True)]
    table = []
    for name in names:
        rs = runs[name]
        pair = [a["seconds"] / b["seconds"] for a, b in zip(rs, runs[duck_name], strict=True)]
        table.append(
            [
                name,
                statistics.median(r["seconds"] for r in rs),
                statistics.median(r["cpu_seconds"] for r in rs),
                max(r["peak_mb"] for r in rs),
                f"{statistics.median(pair):.2f} ({min(pair):.2f}..{max(pair):.2f})",
                "; ".join(f"{r['seconds']:.2f} s @ {r['load']}" for r in rs),
            ]
        )
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio <= GOAL_E2E_RATIO else "MISSES"
    report.table(
        f"End to end: `retention features` vs DuckDB on {data.name} (one cutoff, {as_of})",
        [
            "command",
            "median wall s",
            "median CPU s",
            "peak RSS MiB",
            "x DuckDB, pair by pair: median (min..max)",
            "every run: wall @ load average 1/5/15 min at its start",
        ],
        table,
        note=f"""
Each command is a fresh process run to completion ({args.repeat} rounds, the commands in turn within each round,
so a drift of the shared machine's speed hits all of them alike); wall, CPU and peak RSS (`ru_maxrss`) from
`wait4`. Ours: `retention features -t {data.name} --as-of {as_of} -o OUT.parquet` (read, the whole input
contract with its data-quality report, the kernel's {len(SUBSET)}+ features -- all 36 -- and the Parquet
write). DuckDB: `read_parquet` -> the same {len(SUBSET)}-feature subset as above -> `COPY ... TO` Parquet, all
threads; no contract (no duplicate lines removed, no report).{same}

**Goal (issue #11): <= {GOAL_E2E_RATIO:g}x DuckDB end to end -- {verdict} it (median ratio {ratio:.2f}).**
""",
    )
    if gen:
        report.table(
            "Set-up done in this run (end to end)",
            ["step", "seconds", "peak RSS MiB"],
            [["`retention generate` (data set)", gen["seconds"], gen["peak_mb"]]],
        )


E2E_BEGIN, E2E_END = "<!-- end-to-end: written by --end-to-end -->", "<!-- /end-to-end -->"


def write_block(path: Path, text: str) -> None:
    """Put ``text`` into ``path`` between the end-to-end markers, replacing an earlier block (the rest is kept)."""
    old = path.read_text() if path.exists() else ""
    block = f"{E2E_BEGIN}\n{text.rstrip()}\n{E2E_END}\n"
    if E2E_BEGIN in old and E2E_END in old:
        head, rest = old.split(E2E_BEGIN, 1)
        path.write_text(head + block + rest.split(E2E_END, 1)[1].lstrip("\n"))
    else:
        path.write_text(old.rstrip() + "\n\n" + block)
    print(f"(written to {path})", file=sys.stderr)


def saved_block(path: Path) -> str | None:
    """The end-to-end block of an earlier results file (a full run keeps it), or None."""
    old = path.read_text() if path.exists() else ""
    if E2E_BEGIN not in old or E2E_END not in old:
        return None
    return old.split(E2E_BEGIN, 1)[1].split(E2E_END, 1)[0]


def phase_small_model(args) -> None:
    """A bundle with the first few trees of the champion (same features and metadata) for the memory runs."""
    import lightgbm as lgb

    from serving.loader import load_model
    from serving.model import ScoringModel

    full = load_model(common.MODEL_URI)
    cut = [
        lgb.Booster(model_str=b.model_to_string(num_iteration=SPOOL_TREES))
        for b in (full.churn_booster, full.value_booster)
    ]
    ScoringModel(*cut, full.meta, version=full.version).save(args.out)
    common.emit({"trees": SPOOL_TREES, "full_trees": full.churn_booster.num_trees()})


# --- orchestration -----------------------------------------------------------------------------------------------


def compare(ref: dict, other: dict) -> str:
    import math

    if ref["customers"] != other["customers"]:
        return f"customers differ: {ref['customers']} vs {other['customers']}"
    bad = []
    for name in SUBSET:
        (a, na), (b, nb) = ref[name], other[name]
        if na != nb or not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6):
            bad.append(name)
    return "same values" if not bad else "differs: " + ", ".join(bad)


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the fast engines (best is reported)")
    parser.add_argument("--skip-spool", action="store_true", help="leave out the retention score memory runs")
    parser.add_argument(
        "--spool-only", action="store_true", help="only the retention score memory runs (kernel-spool.md)"
    )
    parser.add_argument(
        "--end-to-end", action="store_true", help="only retention features vs DuckDB on 5M rows (kernel-e2e.md)"
    )
    parser.add_argument("--before", type=Path, help="with --end-to-end: also time the CLI of this older checkout")
    parser.add_argument("--data", type=Path, help=common.SUPPRESS)
    parser.add_argument("--as-of", help=common.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=common.SUPPRESS)
    parser.add_argument("--out", type=Path, help=common.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phases = {
            "contract": phase_contract,
            "kernel": phase_kernel,
            "pandas": phase_pandas,
            "duckdb": phase_duckdb,
            "duckdb-file": phase_duckdb_file,
            "small-model": phase_small_model,
        }
        phases[args.phase](args)
        return

    work: Path = args.work.resolve()
    if args.end_to_end:
        report = common.Report("kernel", "`retention features` end to end vs DuckDB")
        end_to_end(args, report, work)
        text = report.render().replace("\n## ", "\n### ").replace("# ", "## ", 1)
        print(text)
        write_block(common.RESULTS / "kernel.md", text)
        return
    customers = QUICK_CUSTOMERS if args.quick else FULL_CUSTOMERS
    name = "kernel" + ("-spool" if args.spool_only else "") + ("-quick" if args.quick else "")
    report = common.Report(name, "Feature kernel: throughput and memory")
    data, gen = common.ensure_dataset(work, customers, DAYS, seed=0)
    as_of = common.last_day(DAYS)
    base = ["--work", str(work), "--data", str(data), "--as-of", as_of, "--repeat", str(args.repeat)]

    if not args.spool_only:
        contract = common.run_phase(__file__, "contract", base)
        kernel = common.run_phase(__file__, "kernel", base)
        pandas_run = common.run_phase(__file__, "pandas", base)
        duck = {}
        try:
            import duckdb  # noqa: F401

            for threads in (os.cpu_count() or 1, 1):
                duck[threads] = common.run_phase(__file__, "duckdb", [*base, "--threads", str(threads)])
        except ImportError:
            pass

        rows = kernel["rows"]
        k_s = kernel["seconds"]

        def runs_text(res: dict) -> str:
            return ", ".join(f"{w:.2f} ({c:.2f})" for w, c in zip(res["runs"], res["cpu_runs"], strict=True))

        duck_text = "".join(f"; DuckDB {t} thread(s) {runs_text(r)}" for t, r in duck.items())

        def line(name, res, features, check=""):
            s = res["seconds"]
            return [
                name,
                features,
                s,
                res["cpu_seconds"],
                f"{rows / s / 1e6:.2f}",
                f"{s / k_s:.2f}",
                res["peak_mb"],
                res["peak_mb"] - res["start_mb"],
                res["process_peak_mb"],
                check,
            ]

        table = [
            line(
                f"**our kernel** (prepare {kernel['prepare_seconds']:.2f} s + "
                f"features {kernel['compute_seconds']:.2f} s)",
                kernel,
                kernel["features"],
                "reference",
            ),
            line("pandas groupby", pandas_run, len(SUBSET), compare(kernel["checksums"], pandas_run["checksums"])),
        ]
        for threads, res in duck.items():
            table.append(
                line(
                    f"DuckDB SQL, {threads} thread{'s' if threads > 1 else ''}",
                    res,
                    len(SUBSET),
                    compare(kernel["checksums"], res["checksums"]),
                )
            )
        if not duck:
            table.append(
                ["DuckDB SQL", "", "not installed (pip install duckdb into the venv)", "", "", "", "", "", "", ""]
            )
        table.append(
            [
                "contract (`prepare_transactions`, raw file)",
                "–",
                contract["seconds"],
                contract["cpu_seconds"],
                f"{contract['rows'] / contract['seconds'] / 1e6:.2f}",
                f"{contract['seconds'] / k_s:.2f}",
                contract["peak_mb"],
                contract["peak_mb"] - contract["start_mb"],
                contract["process_peak_mb"],
                "",
            ]
        )
        table.append(
            [
                "reading the raw Parquet file (pandas)",
                "–",
                contract["read_seconds"],
                contract["read_cpu_seconds"],
                f"{contract['rows'] / contract['read_seconds'] / 1e6:.2f}",
                f"{contract['read_seconds'] / k_s:.2f}",
                contract["read_peak_mb"],
                contract["read_peak_mb"] - contract["read_start_mb"],
                "",
                "",
            ]
        )
        m_tx = rows / k_s / 1e6
        verdict = "meets" if m_tx >= GOAL_M_TX_PER_S else "MISSES"
        report.table(
            f"{rows:,} transactions, {kernel['checksums']['customers']:,} customers, one cutoff ({as_of})",
            [
                "engine",
                "features",
                "seconds",
                "CPU s",
                "M tx/s",
                "x our time",
                "peak RSS MiB",
                "of which the step's own",
                "process peak MiB",
                "check vs our kernel",
            ],
            table,
            note=f"""
    Input in memory for every engine: the contract's output ({rows:,} valid rows: customer id, timestamp, amount,
    category, channel), read from the cache before timing. Each engine runs {args.repeat} times in its own fresh process
    (pandas once) and the fastest run is shown; all runs, wall (CPU) seconds: our kernel {runs_text(kernel)}; pandas
    {pandas_run["seconds"]:.2f} ({pandas_run["cpu_seconds"]:.2f}){duck_text}. The first run in a process pays
    one-off costs (first touch of memory, library warm-up): its figure is the one to expect from a single call in a
    fresh process.
    "CPU s" is the process's CPU time during the step (all threads). "Peak RSS" is the process's resident high-water
    mark during the first run (input frame included); "of which the step's own" is that peak minus the RSS when the
    step started. Our kernel computes all {kernel["features"]} features on one core; pandas and DuckDB a comparable
    subset of {len(SUBSET)} ({", ".join(SUBSET)}), checked against our kernel's values (column sums, NaN counts,
    customers); DuckDB with all the machine's threads and with one. The contract is the step before the kernel
    (`prepare_transactions` on the raw rows: ids, timestamps, amounts, duplicates); it is not part of the kernel's time.

    **Goal: >= {GOAL_M_TX_PER_S:g} M tx/s through the kernel at one cutoff -- {verdict} it ({m_tx:.2f} M tx/s).**
    """,
        )

    if not args.skip_spool:
        common.ensure_model(work, MODEL_CUSTOMERS, DAYS, seed=1)
        env = common.mlflow_env(work, MODEL_CUSTOMERS)
        bundle = work / f"bundle_first{SPOOL_TREES}trees"
        small = common.run_phase(__file__, "small-model", ["--out", str(bundle)], env=env)
        runs = []
        for label, flags in (
            ("`--spool --partitions 16`", ["--spool", "--partitions", "16"]),
            ("`--in-memory --partitions 16`", ["--in-memory", "--partitions", "16"]),
        ):
            out = work / "scores_memory_run.parquet"
            cmd = [
                *common.retention_cmd(),
                "score",
                "-t",
                str(data),
                "--as-of",
                as_of,
                "--out",
                str(out),
                "--no-record",
                "--model",
                str(bundle),
                *flags,
            ]
            res = common.run_measured(cmd, env=env, cwd=work)
            if res["returncode"] != 0:
                raise RuntimeError(f"retention score failed:\n{res['output'][-3000:]}")
            runs.append((label, res))
        spool_peak = runs[0][1]["peak_mb"]
        rows_m = [[label, res["seconds"], res["peak_mb"], f"{res['peak_mb'] / spool_peak:.2f}"] for label, res in runs]
        report.table(
            "Partitioned batch path: `retention score` peak memory on the same file",
            ["run", "seconds", "peak RSS MiB (whole process)", "x spool"],
            rows_m,
            note=f"""
`retention score -t {data.name} --as-of {as_of} --out scores.parquet --no-record --model DIR` plus the flags
shown; peak RSS from `wait4` (`ru_maxrss`, what `/usr/bin/time -v` reports). The model is the champion trained
on {MODEL_CUSTOMERS:,} customers cut to its first {small["trees"]} of {small["full_trees"]} trees, so that the
reason codes' `pred_contrib` does not dominate the run time; memory does not depend on the tree count.
""",
        )
    if gen:
        report.table(
            "Set-up done in this run",
            ["step", "seconds", "peak RSS MiB"],
            [["`retention generate` (data set)", gen["seconds"], gen["peak_mb"]]],
        )
    kept = saved_block(common.RESULTS / f"{name}.md")
    path = report.write()
    if kept:
        write_block(path, kept)


if __name__ == "__main__":
    main()
