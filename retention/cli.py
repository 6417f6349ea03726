"""The ``retention`` command: wires features, training and serving together and holds no logic of its own.

Exit codes: 0 success, 2 bad input or usage (one sentence on stderr, no traceback), 1 internal failure.
Each command imports what it needs when it runs, so ``retention --help`` does no work.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from retention import progress
from retention.settings import get_settings, settings_table

if TYPE_CHECKING:
    import pandas as pd

    from features.contract import DataQualityReport
    from serving.batch import JobSummary
    from serving.economics import Economics
    from serving.model import ScoringModel
    from serving.scorecard import ScorecardWeights
    from training.config import TrainingConfig

app = typer.Typer(
    name="retention",
    help="Churn and customer-lifetime-value scoring: features, training, registry, serving and batch ranking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class UserError(Exception):
    """A problem with the user's input: reported in one sentence with exit code 2."""


TransactionsOpt = Annotated[
    str,
    typer.Option(
        "--transactions",
        "-t",
        help="Transactions: .csv / .parquet file, a directory of Parquet files, or a SQL URL with ?table= or ?query=.",
    ),
]


def _date_only(value: str | None) -> str | None:
    """``--as-of`` / ``--min-date`` callback: a calendar date YYYY-MM-DD, else one sentence and exit 2."""
    if value is None:
        return None
    from features.contract import parse_date_only

    return str(parse_date_only(value))


AsOfOpt = Annotated[
    str, typer.Option("--as-of", help="As-of date YYYY-MM-DD (UTC day, included).", callback=_date_only)
]
AllowFutureOpt = Annotated[
    bool,
    typer.Option(
        "--allow-future-as-of",
        help="Accept an as-of date more than 31 days after the last transaction (refused by default: every"
        " customer would look churned).",
    ),
]
MinDateOpt = Annotated[
    str,
    typer.Option(
        "--min-date",
        help="Floor of plausible transaction dates, YYYY-MM-DD: earlier rows are counted as implausible_timestamp"
        " (and fail --strict).",
        callback=_date_only,
    ),
]
DEFAULT_MIN_DATE = "1990-01-01"
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="Map input column names: customer_id=cust,timestamp=order_date,amount=value. Order lines: "
        "transaction_id=InvoiceNo,quantity=Quantity,unit_price=UnitPrice (amount = quantity x unit price; the "
        "lines of one order become one transaction), optionally line_id=...",
    ),
]
NormalizeIdsOpt = Annotated[
    bool,
    typer.Option(
        "--normalize-ids",
        help="Read ids an export turned into floats as integers (17850.0 -> 17850); default: ids stay as written.",
    ),
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail when any row breaks the input contract.")]


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


@dataclasses.dataclass(frozen=True)
class TransactionInput:
    """How a command reads its transactions: the options every such command shares, built once per command."""

    source: str
    """File, directory of Parquet files or SQL URL (``--transactions``)."""
    columns: str | None = None
    """``--columns`` mapping text (``customer_id=cust,...``)."""
    as_of: str | None = None
    """As-of date YYYY-MM-DD: later rows are counted, not used."""
    strict: bool = False
    """Fail when any row breaks the input contract."""
    normalize_ids: bool = False
    """Read float-looking ids as integers."""
    min_date: str = DEFAULT_MIN_DATE
    """Floor of plausible transaction dates, YYYY-MM-DD."""
    allow_future_as_of: bool | None = False
    """False refuses an as-of date too far after the last transaction (:func:`check_as_of`); None does not check
    (``quality`` only reports)."""

    @property
    def column_map(self) -> dict[str, str]:
        """``--columns`` parsed (ContractError, exit 2, when malformed)."""
        from features.contract import parse_column_map

        return parse_column_map(self.columns)

    @property
    def min_day(self) -> dt.date:
        """``--min-date`` as a date."""
        from features.contract import parse_date_only

        return parse_date_only(self.min_date, "--min-date")

    def load(self, quiet: bool = False) -> tuple[pd.DataFrame, DataQualityReport]:
        """Read the transactions through the contract; print the data-quality report to stderr unless ``quiet``."""
        from features.sources import load_transactions

        tx, report = load_transactions(
            self.source,
            columns=self.column_map,
            as_of=self.as_of,
            strict=self.strict,
            normalize_float_ids=self.normalize_ids,
            min_date=self.min_day,
        )
        if not quiet:
            _echo_err(report.render())
        if self.allow_future_as_of is not None:
            check_as_of(report, self.as_of, self.allow_future_as_of)
        return tx, report


def check_as_of(report, as_of: str | None, allow_future_as_of: bool) -> None:
    """Refuse (exit 2) an as-of date more than the tolerance after the input's last valid transaction."""
    from features.contract import future_as_of_problem, parse_date_only

    if as_of is None or allow_future_as_of:
        return
    problem = future_as_of_problem(report.last_date, parse_date_only(as_of))
    if problem:
        raise UserError(problem)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.csv or .parquet).")],
    customers: Annotated[int, typer.Option("--customers", min=1, help="Number of customers.")] = 5_000,
    days: Annotated[
        int | None, typer.Option("--days", min=30, help="Days of history (default: the scenario's, 730 for default).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same file).")] = 0,
    start: Annotated[
        str | None, typer.Option("--start", help="First day of the history, YYYY-MM-DD (default: the scenario's).")
    ] = None,
    scenario: Annotated[
        str, typer.Option("--scenario", help="Preset: default, cohort or seasonal (see docs/quality.md).")
    ] = "default",
    campaign_out: Annotated[
        Path | None,
        typer.Option(
            "--campaign-out",
            help="Also simulate a retention campaign with a randomized control group (known effects: persuadables,"
            " sure things, lost causes, sleeping dogs) and write its log here (.csv or .parquet); --out then holds"
            " the transactions with the campaign's effects.",
        ),
    ] = None,
    campaign_sent_at: Annotated[
        str | None,
        typer.Option(
            "--campaign-sent-at", help="The campaign's send day, YYYY-MM-DD (with --campaign-out).", callback=_date_only
        ),
    ] = None,
    campaign_truth: Annotated[
        Path | None,
        typer.Option(
            "--campaign-truth",
            help="Write each customer's response type and both potential outcomes here (.csv or .parquet).",
        ),
    ] = None,
    horizon_days: Annotated[
        int, typer.Option("--horizon-days", min=1, help="The campaign's outcome window in days (with --campaign-out).")
    ] = 90,
    events_out: Annotated[
        Path | None,
        typer.Option(
            "--events-out",
            help="Also write customer events (complaints, resolutions, ratings, support contacts, e-mail) whose effect"
            " on churn is known here (.csv or .parquet); --out then holds the transactions with that effect.",
        ),
    ] = None,
) -> None:
    """Write a realistic, seeded synthetic transaction log (and, with --campaign-out, a simulated campaign)."""
    from features.synthetic import SCENARIOS, generate_transactions, write_transactions

    for path in (out, campaign_out, campaign_truth, events_out):
        if path is not None and path.suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise UserError(f"'{path}' must end in .csv or .parquet")
    if (campaign_out is None) != (campaign_sent_at is None) or (campaign_truth and not campaign_out):
        raise UserError("--campaign-out and --campaign-sent-at go together (--campaign-truth needs both)")
    if scenario not in SCENARIOS:
        raise UserError(f"--scenario must be one of {', '.join(SCENARIOS)}, got '{scenario}'")
    if start is not None:
        from features.contract import ContractError, to_date

        try:
            start = str(to_date(start))
        except ContractError:
            raise UserError(f"--start '{start}' is not a date (expected YYYY-MM-DD)") from None
    frame = generate_transactions(customers, days, seed=seed, start=start, scenario=scenario)
    if events_out is not None:
        from features.synthetic_events import generate_events

        frame, events = generate_events(frame, seed=seed)
        write_transactions(events, events_out)
        _echo_err(f"wrote {len(events):,} customer events to {events_out}")
    if campaign_out is not None:
        from features.synthetic_campaigns import simulate_campaign

        campaign = simulate_campaign(frame, campaign_sent_at, horizon_days=horizon_days, seed=seed)
        frame = campaign.transactions
        write_transactions(campaign.campaigns, campaign_out)
        if campaign_truth is not None:
            write_transactions(campaign.truth, campaign_truth)
        sent, treated = len(campaign.campaigns), int(campaign.campaigns["treatment"].sum())
        _echo_err(
            f"wrote a campaign sent on {campaign_sent_at} to {sent:,} customers ({treated:,} contacted,"
            f" {sent - treated:,} held out) to {campaign_out}"
        )
    write_transactions(frame, out)
    first, last = frame["timestamp"].min().date(), frame["timestamp"].max().date()
    _echo_err(f"wrote {len(frame):,} transactions of {customers:,} customers ({first} .. {last}) to {out}")


@app.command()
def features(
    transactions: TransactionsOpt,
    as_of: AsOfOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.csv or .parquet).")],
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
    allow_future_as_of: AllowFutureOpt = False,
) -> None:
    """Write the point-in-time feature table of every customer at one as-of date."""
    from features.kernel import compute_features
    from features.sources import write_frame

    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise UserError(f"--out '{out}' must end in .csv or .parquet")
    tx, _ = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of).load()
    table = compute_features(tx, as_of)
    write_frame(table, out)
    _echo_err(f"wrote features of {len(table):,} customers as of {as_of} to {out}")


@app.command()
def quality(
    transactions: TransactionsOpt,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Optional as-of date YYYY-MM-DD.", callback=_date_only)
    ] = None,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
) -> None:
    """Check a transaction (or order-line) file against the input contract and print the data-quality report.

    Counts lines, orders, exact duplicate lines and cancelled orders; warns when the input looks like order lines
    mapped as transactions (``--strict`` then fails).
    """
    inputs = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of=None)
    _, report = inputs.load(quiet=as_json)
    if as_json:
        typer.echo(report.to_json())


HorizonOpt = Annotated[
    int | None, typer.Option("--horizon-days", min=1, help="Churn/value horizon H in days (default 90).")
]
ExperimentOpt = Annotated[
    str | None, typer.Option("--experiment", help="MLflow experiment name (default: the model name).")
]
ModelNameOpt = Annotated[
    str | None, typer.Option("--model-name", help="Registered model name (default $RETENTION_MODEL_NAME, retention).")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).")]
MinHistoryOpt = Annotated[
    int | None,
    typer.Option(
        "--min-history-days",
        min=0,
        help="Days of history a training cutoff needs before it; with less, a BTYD-only version is trained"
        " (default 30).",
    ),
]
LevelSourceOpt = Annotated[
    str | None,
    typer.Option(
        "--level-source",
        help="Where the total forecast comes from: auto (the estimator that backtests best; default), btyd_rebased,"
        " btyd, run_rate or seasonal_run_rate (see training/level.py).",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Training config JSON (e.g. a run's training_config.json from MLflow); the flags above override it.",
    ),
]
"""The training options' defaults are :class:`training.config.TrainingConfig`'s (the help repeats them; a test
checks it): a flag left out keeps the config's value."""


def _training_config(config_file: Path | None, **flags: Any) -> TrainingConfig:
    """The config of a training command: ``--config`` (else the defaults) with the flags that were given."""
    from training.config import DEFAULT_CONFIG, TrainingConfig

    base = TrainingConfig.read(config_file) if config_file is not None else DEFAULT_CONFIG
    return base.replace(**flags)


def _as_of(value: str) -> dt.date:
    from features.contract import to_date

    return to_date(value)


@app.command()
def train(
    transactions: TransactionsOpt,
    as_of: AsOfOpt,
    horizon_days: HorizonOpt = None,
    experiment: ExperimentOpt = None,
    model_name: ModelNameOpt = None,
    tune: Annotated[
        int | None, typer.Option("--tune", min=1, help="Parameter sets to try per head (default 1: defaults).")
    ] = None,
    margin: Annotated[
        float | None, typer.Option("--margin", help="Gross margin: share of revenue that is profit (default 1).")
    ] = None,
    discount_rate: Annotated[
        float | None, typer.Option("--discount-rate", help="Annual discount rate for value (default 0).")
    ] = None,
    seed: SeedOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Make this version champion whatever its metrics.")] = False,
    min_history_days: MinHistoryOpt = None,
    level_source: LevelSourceOpt = None,
    config_file: ConfigOpt = None,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
    allow_future_as_of: AllowFutureOpt = False,
    campaigns: Annotated[
        str | None,
        typer.Option(
            "--campaigns",
            help="Campaign log with a held-out control group (.csv / .parquet / SQL URL: customer_id, campaign_id,"
            " sent_at, treatment[, offer, cost]): fit uplift heads on it.",
        ),
    ] = None,
    campaign_columns: Annotated[
        str | None,
        typer.Option("--campaign-columns", help="Campaign column mapping, e.g. sent_at=assigned,treatment=group."),
    ] = None,
    events: Annotated[
        str | None,
        typer.Option(
            "--events",
            help="Customer events (.csv / .parquet / SQL URL: customer_id, timestamp, type[, value, reason]; types"
            " complaint, complaint_resolved, rating, support_contact, email_open, email_click, unsubscribe, ...):"
            " the heads also learn from complaints, ratings and engagement.",
        ),
    ] = None,
    event_columns: Annotated[
        str | None,
        typer.Option("--event-columns", help="Event column mapping, e.g. type=event,value=score,timestamp=at."),
    ] = None,
) -> None:
    """Train churn and future-value heads, log to MLflow, register a version and apply the champion gate; with
    ``--campaigns``, uplift heads too (who a contact actually persuades); with ``--events``, on complaint, rating and
    engagement features too."""
    from training.jobs import train as run_train

    config = _training_config(
        config_file,
        horizon_days=horizon_days,
        tune=tune,
        margin=margin,
        discount_rate=discount_rate,
        seed=seed,
        min_history_days=min_history_days,
        level_source=level_source,
    )
    inputs = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of)
    tx, quality_report = inputs.load()
    last = quality_report.last_date
    horizon = config.horizon_days
    if last is not None and dt.date.fromisoformat(last) <= _as_of(as_of) - dt.timedelta(days=horizon):
        raise UserError(
            f"no transaction in the {horizon} days before the as-of date {as_of} (the last is on {last}): every"
            " training label would say churned; use an as-of date closer to the data"
        )
    campaign_log, campaign_report = None, None
    if campaigns is not None:
        from features.campaigns import CAMPAIGN_COLUMNS, read_campaigns
        from features.contract import parse_column_map

        mapping = parse_column_map(campaign_columns, known=CAMPAIGN_COLUMNS) or None
        campaign_log, campaign_report = read_campaigns(campaigns, mapping, strict, normalize_float_ids=normalize_ids)
        _echo_err(campaign_report.render())
    elif campaign_columns is not None:
        raise UserError("--campaign-columns maps the columns of --campaigns: give the campaign log too")
    event_log, event_report = None, None
    if events is not None:
        from features.contract import parse_column_map
        from features.events import EVENT_COLUMNS, read_events

        mapping = parse_column_map(event_columns, known=EVENT_COLUMNS) or None
        event_log, event_report = read_events(events, mapping, strict, normalize_float_ids=normalize_ids)
        _echo_err(event_report.render())
    elif event_columns is not None:
        raise UserError("--event-columns maps the columns of --events: give the event log too")
    summary = run_train(
        tx,
        quality_report,
        as_of=_as_of(as_of),
        source=transactions,
        config=config,
        experiment=experiment,
        model_name=model_name,
        force=force,
        campaigns=campaign_log,
        campaign_quality=campaign_report,
        events=event_log,
        event_quality=event_report,
    )
    typer.echo(summary.comparison)
    status = "champion" if summary.decision.promoted else "challenger"
    typer.echo(f"\nregistered {summary.model_name} version {summary.version} as {status}: {summary.decision.reason}")
    if summary.uplift is not None:
        typer.echo(_uplift_line(summary.uplift))
    typer.echo(f"mlflow run {summary.run_id}")


def _uplift_line(verdict: dict[str, Any]) -> str:
    """One line on the uplift heads' gate (:func:`training.registry.uplift_verdict`)."""
    if verdict.get("note"):
        return f"uplift heads: none ({verdict['note']})"
    qini = {k: verdict.get(f"uplift_qini_{k}") for k in ("model", "risk", "random_p95")}
    figures = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in qini.items() if v is not None)
    if verdict["trusted"]:
        return f"uplift heads: trusted, plans rank by the modelled uplift (held-out Qini: {figures})"
    return f"uplift heads: not trusted, plans use the offers' assumed save rate (held-out Qini: {figures})"


@app.command()
def backtest(
    transactions: TransactionsOpt,
    as_of: AsOfOpt,
    horizon_days: HorizonOpt = None,
    folds: Annotated[int, typer.Option("--folds", min=1, help="Rolling cutoffs to evaluate.")] = 3,
    step_days: Annotated[int, typer.Option("--step-days", min=1, help="Days between folds.")] = 30,
    experiment: ExperimentOpt = None,
    seed: SeedOpt = None,
    min_history_days: MinHistoryOpt = None,
    level_source: LevelSourceOpt = None,
    config_file: ConfigOpt = None,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
    allow_future_as_of: AllowFutureOpt = False,
) -> None:
    """Evaluate the whole pipeline at rolling cutoffs against the BG/NBD and naive baselines."""
    from training.jobs import backtest as run_backtest
    from training.report import backtest_markdown

    config = _training_config(
        config_file,
        horizon_days=horizon_days,
        seed=seed,
        min_history_days=min_history_days,
        level_source=level_source,
    )
    inputs = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of)
    tx, _ = inputs.load()
    table = run_backtest(
        tx, as_of=_as_of(as_of), folds=folds, step_days=step_days, experiment=experiment, config=config
    )
    typer.echo(backtest_markdown(table))


@app.command()
def btyd(
    transactions: TransactionsOpt,
    as_of: AsOfOpt,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
    allow_future_as_of: AllowFutureOpt = False,
) -> None:
    """Fit the classical BG/NBD + Gamma-Gamma models alone and print their parameters as JSON."""
    from training.jobs import fit_btyd_only

    tx, _ = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of).load()
    typer.echo(json.dumps(fit_btyd_only(tx, _as_of(as_of)), indent=2))


@app.command()
def acquisition(
    transactions: TransactionsOpt,
    as_of: AsOfOpt,
    horizon_days: Annotated[
        int, typer.Option("--horizon-days", min=1, help="Days after the first purchase day that count (H).")
    ] = 90,
    by: Annotated[str, typer.Option("--by", help="Split by: channel (acquisition channel), category or all.")] = (
        "channel"
    ),
    cohort_days: Annotated[
        int, typer.Option("--cohort-days", min=1, help="Acquisition days averaged (the latest fully observed).")
    ] = 90,
    as_json: Annotated[bool, typer.Option("--json", help="Print the forecast as JSON on stdout.")] = False,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
    allow_future_as_of: AllowFutureOpt = False,
) -> None:
    """Expected value of a customer acquired today, per acquisition channel, from recent cohorts (for budgets)."""
    from training.acquisition import BY_OPTIONS, acquisition_forecast, forecast_json, render_forecast

    if by not in BY_OPTIONS:
        raise UserError(f"--by must be one of {', '.join(BY_OPTIONS)}, got '{by}'")
    inputs = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of)
    tx, _ = inputs.load(quiet=as_json)
    table = acquisition_forecast(tx, _as_of(as_of), horizon_days, by, cohort_days=cohort_days)
    typer.echo(forecast_json(table) if as_json else render_forecast(table))


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Registered model version to make champion.")],
    model_name: ModelNameOpt = None,
) -> None:
    """Move the champion alias to a model version by hand."""
    from training.registry import promote as run_promote

    model_name = model_name or get_settings().model_name
    previous = run_promote(model_name, version)
    typer.echo(f"{model_name}: champion is now version {version} (was {previous or 'none'})")


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Model: models:/NAME@ALIAS, models:/NAME/VERSION, or a local model directory (default"
        " $RETENTION_MODEL_URI, else the champion of $RETENTION_MODEL_NAME: models:/retention@champion).",
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Online store URL: sqlite:///path.db, postgresql://..., redis://... (default $RETENTION_STORE_URL, else"
        " sqlite:///$RETENTION_HOME/online_store.db: the same for `materialize` and `serve`).",
    ),
]


@app.command()
def serve(
    model: ModelOpt = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    store: StoreOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Worker processes, one per core the service may use (0: one per core; default $RETENTION_WORKERS,"
            " else 1). All serve one model version; a reload reaches every worker.",
        ),
    ] = None,
) -> None:
    """Start the BentoML prediction service (/predict, /rank, /readyz, /metrics, OpenAPI at /)."""
    # without --store the service opens the settings' store: $RETENTION_STORE_URL, else where `materialize` writes
    env = {**os.environ, "RETENTION_MODEL_URI": model or get_settings().resolved_model_uri}
    if store:
        env["RETENTION_STORE_URL"] = store
    if workers is not None:
        env["RETENTION_WORKERS"] = str(workers)
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:Retention", "--port", str(port)]
    command += ["--host", host]
    from serving.supervise import run

    # this process stays the main one: SIGHUP to the PID it prints reloads the model in every worker (no restart)
    status = run(command, env)
    if status:
        raise typer.Exit(status)


EconomicsOpt = Annotated[
    Path | None,
    typer.Option(
        "--economics",
        help="JSON file of the economics: gross_margin, cost_to_serve_per_order, cost_per_refund, contact_cost,"
        " discount_rate, offers (default $RETENTION_ECONOMICS; unset: no costs, expected_profit = expected_value).",
    ),
]
MarginOpt = Annotated[
    float | None, typer.Option("--margin", help="Gross margin, a share of revenue in [0, 1] (overrides the file).")
]
CostPerOrderOpt = Annotated[
    float | None,
    typer.Option("--cost-per-order", help="Cost to serve one order, currency units (overrides the file)."),
]
CostPerRefundOpt = Annotated[
    float | None,
    typer.Option("--cost-per-refund", help="Handling cost of one refund, currency units (overrides the file)."),
]
ContactCostOpt = Annotated[
    float | None,
    typer.Option("--contact-cost", help="Cost of one retention contact, currency units (overrides the file)."),
]
ScorecardWeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--scorecard-weights",
        help="Weights of the composite score, e.g. contribution=1,loyalty=2,potential=1 (default:"
        " $RETENTION_SCORECARD_WEIGHTS, else 1/3 each).",
    ),
]
EngineOpt = Annotated[str, typer.Option("--engine", help="local or spark.")]
RecordOpt = Annotated[bool, typer.Option("--record/--no-record", help="Record the run in MLflow.")]
PartitionsOpt = Annotated[int, typer.Option("--partitions", min=1, help="Customer partitions (resume unit).")]
SpoolOpt = Annotated[
    bool | None, typer.Option("--spool/--in-memory", help="Stream the input to partition files first.")
]


def _economics(
    file: Path | None,
    margin: float | None,
    cost_per_order: float | None,
    cost_per_refund: float | None,
    contact_cost: float | None,
) -> Economics:
    """The run's economics: ``--economics`` (else ``$RETENTION_ECONOMICS``, else none), then the flags given."""
    from serving.economics import Economics, economics_of_settings

    base = Economics.read(file) if file is not None else economics_of_settings(get_settings())
    return base.override(
        gross_margin=margin,
        cost_to_serve_per_order=cost_per_order,
        cost_per_refund=cost_per_refund,
        contact_cost=contact_cost,
    )


def _scorecard_weights(text: str | None) -> ScorecardWeights | None:
    """The run's composite weights: ``--scorecard-weights``, else ``$RETENTION_SCORECARD_WEIGHTS``, else None."""
    from serving.scorecard import ScorecardWeights, weights_of_settings

    return ScorecardWeights.parse(text) if text is not None else weights_of_settings(get_settings())


def _check_job(engine: str, inputs: TransactionInput) -> None:
    """Refuse (exit 2) an unknown ``--engine`` or a malformed ``--columns`` before any model loads."""
    if engine not in ("local", "spark"):
        raise UserError(f"--engine must be 'local' or 'spark', got '{engine}'")
    _ = inputs.column_map


def _score_job(engine: str, inputs: TransactionInput, out: str, model: ScoringModel, **options: Any) -> JobSummary:
    """Run the nightly scoring job of ``engine`` (local or spark) on ``inputs`` into ``out`` with its progress bar:
    ``score`` and ``plan`` score every customer through this one call."""
    if engine == "spark":
        from serving.spark_engine import run_spark_job as run_job
    else:
        from serving.batch import run_score_job as run_job
    with progress.counter("scoring partitions") as bar:
        return run_job(
            inputs.source,
            inputs.as_of,
            out,
            model,
            columns=inputs.column_map,
            strict=inputs.strict,
            normalize_float_ids=inputs.normalize_ids,
            min_date=inputs.min_day,
            allow_future_as_of=bool(inputs.allow_future_as_of),
            on_progress=bar,
            **options,
        )


@app.command()
def score(
    transactions: TransactionsOpt,
    as_of: AsOfOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Output: .parquet / .csv file, or SQL URL with ?table=.")],
    model: ModelOpt = None,
    engine: EngineOpt = "local",
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Keep only the K first in the ranking.")] = None,
    partitions: PartitionsOpt = 8,
    spool: SpoolOpt = None,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    record: RecordOpt = True,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
    allow_future_as_of: AllowFutureOpt = False,
    reasons: Annotated[
        str,
        typer.Option(
            "--reasons",
            help="Reason columns: top-k = for every written row, computed for those rows only (default); "
            "all = computed for every customer; none = empty (same columns).",
        ),
    ] = "top-k",
    economics: EconomicsOpt = None,
    margin: MarginOpt = None,
    cost_per_order: CostPerOrderOpt = None,
    cost_per_refund: CostPerRefundOpt = None,
    contact_cost: ContactCostOpt = None,
    scorecard_weights: ScorecardWeightsOpt = None,
) -> None:
    """Score every customer and write the ranked retention list atomically (resumable, idempotent)."""
    from serving.loader import load_model

    inputs = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of)
    _check_job(engine, inputs)
    run_economics = _economics(economics, margin, cost_per_order, cost_per_refund, contact_cost)
    weights = _scorecard_weights(scorecard_weights)
    model = model or get_settings().resolved_model_uri
    scoring_model = load_model(model)
    summary = _score_job(
        engine, inputs, out, scoring_model, top_k=top_k, partitions=partitions, spool_input=spool, reasons=reasons,
        economics=run_economics, scorecard_weights=weights,
    )  # fmt: skip
    typer.echo(summary.render())
    from serving.report import write_run_report

    html, report = write_run_report(summary.to_dict(), out)
    if report is not None:
        typer.echo(f"report: {report}")
    if record:
        from serving.runs import record_run

        record_run(summary, source=transactions, model=model, engine=engine, report_html=html)


def _write_json(data: dict[str, Any], path: Path) -> None:
    """``data`` as indented JSON at ``path``, atomically (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False))
    os.replace(tmp, path)


@app.command()
def plan(
    transactions: TransactionsOpt,
    as_of: AsOfOpt,
    budget: Annotated[float, typer.Option("--budget", help="Money the plan may spend at most, currency units.")],
    out: Annotated[str, typer.Option("--out", "-o", help="The plan: .parquet / .csv file, or SQL URL with ?table=.")],
    offer: Annotated[
        list[str] | None,
        typer.Option(
            "--offer",
            metavar="SPEC",
            help="An offer NAME:fixed=COST,share=SHARE,save=RATE (fixed cost per contact, discount as a share of"
            " the customer's expected revenue, assumed share of would-be churners kept); repeat for several, after"
            " the economics file's offers.",
        ),
    ] = None,
    model: ModelOpt = None,
    engine: EngineOpt = "local",
    partitions: PartitionsOpt = 8,
    spool: SpoolOpt = None,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
    allow_future_as_of: AllowFutureOpt = False,
    economics: EconomicsOpt = None,
    margin: MarginOpt = None,
    cost_per_order: CostPerOrderOpt = None,
    cost_per_refund: CostPerRefundOpt = None,
    contact_cost: ContactCostOpt = None,
    plan_json: Annotated[
        Path | None,
        typer.Option("--plan-json", help="Where the totals and budget curve go (default <out>.plan.json for a file)."),
    ] = None,
    record: RecordOpt = True,
    scorecard_weights: ScorecardWeightsOpt = None,
) -> None:
    """Choose whom to contact with which offer within a budget (serving.plan) and write the plan atomically."""
    import tempfile

    import pandas as pd

    from features.sources import is_sql_url
    from serving.batch import check_output, write_output
    from serving.economics import checked_number
    from serving.loader import load_model
    from serving.plan import make_plan, plan_offers

    inputs = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of)
    _check_job(engine, inputs)
    run_economics = _economics(economics, margin, cost_per_order, cost_per_refund, contact_cost)
    weights = _scorecard_weights(scorecard_weights)
    checked_number(budget, "--budget")
    offers = plan_offers(offer, run_economics)
    check_output(out)
    if plan_json is None and not is_sql_url(out):
        plan_json = Path(f"{out}.plan.json")
    model = model or get_settings().resolved_model_uri
    scoring_model = load_model(model)
    staging_root = get_settings().batch_dir if is_sql_url(out) else Path(out).resolve().parent
    staging_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".plan-scores-", dir=staging_root) as folder:
        scores_path = str(Path(folder) / "scores.parquet")  # every customer, scored by the nightly job
        summary = _score_job(
            engine, inputs, scores_path, scoring_model, partitions=partitions, spool_input=spool,
            reasons="all", economics=run_economics, scorecard_weights=weights,
        )  # fmt: skip
        scored = pd.read_parquet(scores_path)
    result = make_plan(scored, offers, budget, run_economics.override(offers=()), meta=scoring_model.meta)
    write_output(result.rows, out)
    if plan_json is not None:
        economics_used = dataclasses.replace(run_economics, offers=offers).to_dict()
        meta = {"model_version": scoring_model.version, "as_of": summary.as_of, "economics": economics_used}
        _write_json({**result.to_dict(), **meta}, plan_json)
    from serving.report import write_run_report

    html, report = write_run_report(summary.to_dict(), out, plan=result.to_dict())
    if record:
        from serving.runs import record_plan_run

        record_plan_run(
            result, budget=budget, offers=offers, economics=run_economics, source=transactions, model=model,
            summary=summary, output=out, report_html=html,
        )  # fmt: skip
    _echo_err(dataclasses.replace(summary, output="the plan's scoring stage").render())
    typer.echo(result.render())
    where = f" and the totals to {plan_json}" if plan_json else ""
    typer.echo(f"wrote {len(result.rows):,} plan rows to {out}{where}")
    if report is not None:
        typer.echo(f"report: {report}")


@app.command()
def materialize(
    transactions: TransactionsOpt,
    as_of: AsOfOpt,
    store: StoreOpt = None,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    normalize_ids: NormalizeIdsOpt = False,
    min_date: MinDateOpt = DEFAULT_MIN_DATE,
    allow_future_as_of: AllowFutureOpt = False,
) -> None:
    """Write every customer's features at the as-of date to the online store (atomic snapshot swap)."""
    from features.kernel import compute_features
    from serving.store import is_unavailable_error, open_store, redact_url

    url = store or get_settings().resolved_store_url
    tx, _ = TransactionInput(transactions, columns, as_of, strict, normalize_ids, min_date, allow_future_as_of).load()
    table = compute_features(tx, as_of)
    feature_names = [c for c in table.columns if c not in ("customer_id", "cutoff")]
    try:
        target = open_store(url)
        try:
            info = target.write_snapshot(table, as_of=_as_of(as_of), feature_columns=feature_names)
        finally:
            target.close()
    except Exception as exc:
        if not is_unavailable_error(exc):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"the online store {redact_url(url)} cannot be reached ({reason}); nothing written") from None
    _echo_err(f"materialized {info.rows:,} customers as of {info.as_of} into {redact_url(url)}")


@app.command()
def bento(
    model: ModelOpt = None,
    context: Annotated[Path, typer.Option("--context", help="Build context folder to (re)create.")] = Path(
        "build/bento"
    ),
    no_build: Annotated[bool, typer.Option("--no-build", help="Only write the build context.")] = False,
) -> None:
    """Build a Bento that carries the model and serves it with no MLflow server (see docs/crm-engineer.md)."""
    from serving.bento import build, write_context
    from serving.loader import load_model

    scoring_model = load_model(model or get_settings().resolved_model_uri)
    folder = write_context(scoring_model, context, Path(__file__).resolve().parent.parent)
    if no_build:
        typer.echo(f"build context written to {folder}")
        return
    tag = build(folder)
    typer.echo(f"built Bento {tag} with model version {scoring_model.version}")
    typer.echo(f"serve it with: bentoml serve {tag}    container: bentoml containerize {tag}")


@app.command("settings")
def show_settings(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print this process's values as JSON (secrets and passwords hidden).")
    ] = False,
) -> None:
    """Print every RETENTION_* setting: the Markdown table (variable, default, meaning) or, with --json, the values
    in effect here."""
    if not as_json:
        typer.echo(settings_table())
        return
    from features.urls import redact_url

    settings = get_settings()
    values = settings.model_dump(mode="json")  # SecretStr values dump as "**********"
    values["store_url"] = redact_url(values["store_url"]) if values["store_url"] else None
    values["resolved_store_url"] = redact_url(settings.resolved_store_url)
    values["resolved_model_uri"] = settings.resolved_model_uri
    typer.echo(json.dumps(values, indent=2))


def _quiet_libraries() -> None:
    """Keep library chatter (MLflow INFO lines, schema hints) out of the command's output."""
    import logging
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    for name in ("mlflow", "alembic", "lightgbm"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map errors to exit codes (2 user error, 1 internal failure)."""
    from pydantic import ValidationError

    from features.contract import ContractError

    try:
        debug = get_settings().debug
    except ValidationError as exc:
        problems = "; ".join(f"RETENTION_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        _echo_err(f"error: invalid settings: {problems}")
        return 2
    if not debug:
        _quiet_libraries()
    try:
        app(args=argv, standalone_mode=False)
    except (UserError, ContractError, LookupError) as exc:
        _echo_err(f"error: {exc}")
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _echo_err("aborted")
        return 1
    except Exception as exc:
        if isinstance(exc, typer.TyperException) and hasattr(exc, "show"):
            exc.show()
            return int(getattr(exc, "exit_code", 2))
        _echo_err(f"internal error: {type(exc).__name__}: {exc}")
        if debug:
            raise
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
