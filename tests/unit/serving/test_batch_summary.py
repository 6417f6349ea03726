"""The nightly job's summary: the customer equity and its 80% interval (``serving.intervals.equity_interval`` on
the scored customers, from their moments), its text, the Spark engine's per-tier aggregate read back as the
same moments, and the one summary function (``serving.batch.summarise``) both engines end with."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from model_util import make_model

from features.contract import RULES, ContractError, DataQualityReport
from serving.batch import (
    JobSummary,
    PartitionResult,
    Population,
    check_parts,
    equity_fields,
    population_moments,
    population_of,
    short_amount,
    summarise,
)
from serving.intervals import RATIO_GRID, EquityMoments, IntervalCalibration, equity_interval
from serving.model import tier_index
from serving.spark_engine import tier_moments

Z80 = 1.2815515655446004


def calibration(tiers: int, cv2: float = 0.25) -> IntervalCalibration:
    knots = tuple(np.linspace(0.0, 2.0, RATIO_GRID).tolist())
    return IntervalCalibration(ratio_knots=(knots,) * tiers, value_cv2=(cv2,) * tiers)


def summary(**changes) -> JobSummary:
    base = JobSummary(
        output="out.parquet",
        model_version="3",
        as_of="2024-01-31",
        customers_scored=2,
        rows_written=2,
        report=DataQualityReport(
            rows_read=3,
            rows_valid=3,
            rule_counts=dict.fromkeys(RULES, 0),
            customers=2,
            purchases=3,
            refunds=0,
            zero_amount=0,
            refund_share=0.0,
            first_date="2023-01-02",
            last_date="2024-01-30",
            as_of="2024-01-31",
        ),
        top20_value_share=0.5,
        horizon_days=90,
        equity=1_234_567.0,
        equity_low=1_134_000.0,
        equity_high=1_420_000.0,
        tier_counts={"gold": 2},
        psi={},
        drift_warnings=[],
        partitions=1,
        resumed_partitions=0,
        seconds=1.0,
    )
    return dataclasses.replace(base, **changes)


def test_equity_fields_are_the_hand_computed_lognormal_interval_of_the_scored_customers() -> None:
    model = make_model()
    tiers = len(model.meta.tier_names)
    scores = pd.DataFrame({"expected_value": [100.0, 100.0, 0.0]})
    groups = tier_index(scores["expected_value"].to_numpy(), model.meta.tier_thresholds)
    moments = population_moments(scores, model)
    assert moments.total == 200.0 and sum(moments.squares) == 20_000.0
    equity, low, high = equity_fields(moments, calibration(tiers))
    # variance 0.25 * (100^2 + 100^2), total 200 (make_model's bundle: no level uncertainty)
    s2 = math.log1p(0.25 * 20_000 / 200.0**2)
    assert equity == 200.0
    assert low == pytest.approx(math.exp(math.log(200.0) - s2 / 2 - Z80 * math.sqrt(s2)), rel=1e-12)
    assert high == pytest.approx(math.exp(math.log(200.0) - s2 / 2 + Z80 * math.sqrt(s2)), rel=1e-12)
    direct_low, direct_high, direct_total = equity_interval(
        scores["expected_value"].to_numpy(), groups, calibration(tiers)
    )
    assert (equity, low, high) == (direct_total, direct_low, direct_high)  # the same function, not a second one


def test_without_a_value_calibration_the_summary_has_the_sum_and_no_interval() -> None:
    moments = EquityMoments(total=50.0, squares=(2500.0,))
    assert equity_fields(moments, None) == (50.0, None, None)
    assert equity_fields(moments, IntervalCalibration(ratio_knots=None, value_cv2=None)) == (50.0, None, None)
    assert equity_fields(EquityMoments(0.0, (0.0,)), calibration(1)) == (0.0, 0.0, 0.0)  # no value, no spread


def test_spark_tier_aggregates_read_back_as_the_same_moments() -> None:
    names = ("platinum", "gold", "silver")
    by_tier = {"silver": (2, 3.0, 5.0), "platinum": (1, 10.0, 100.0)}  # no gold customer
    assert tier_moments(by_tier, names) == EquityMoments(total=13.0, squares=(100.0, 0.0, 5.0))


@pytest.mark.parametrize(
    ("value", "text"),
    [(1_234_567.0, "1.23M"), (1_100_000.0, "1.1M"), (999_950.0, "1M"), (950.0, "950"), (12_345.0, "12.3k"),
     (2.5e9, "2.5B"), (0.0, "0")],
)  # fmt: skip
def test_short_amount(value: float, text: str) -> None:
    assert short_amount(value) == text


def test_render_says_the_equity_with_its_interval_over_the_horizon() -> None:
    text = summary().render()
    assert "customer equity over the next 90 days: 1,234,567 (80% interval 1.13M-1.42M)" in text.splitlines()
    bare = summary(equity_low=None, equity_high=None).render()
    assert "customer equity over the next 90 days: 1,234,567 (no interval: the model has no value calibration)" in bare
    assert summary().to_dict()["equity_low"] == 1_134_000.0


def test_render_says_how_many_customers_are_unprofitable_and_the_economics_set() -> None:
    from serving.economics import Economics

    lost = {"unprofitable": {"customers": 1, "expected_profit": -345.6}}
    text = summary(population=lost, economics=Economics(gross_margin=0.4, cost_per_refund=5).to_dict()).render()
    lines = text.splitlines()
    assert "1 customers (50.0%) are unprofitable: together -346 expected profit over the next 90 days" in lines
    assert "economics: gross margin 0.4, cost per refund 5" in lines
    assert not [line for line in summary().render().splitlines() if "unprofitable" in line or "economics" in line]
    assert summary().to_dict()["economics"] == Economics().to_dict()


def part_report(rows_read: int, bad_amount: int, last_date: str = "2024-01-30") -> DataQualityReport:
    counts = dict.fromkeys(RULES, 0) | {"bad_amount": bad_amount}
    valid = rows_read - bad_amount
    return DataQualityReport(
        rows_read=rows_read, rows_valid=valid, rule_counts=counts, customers=valid, purchases=valid, refunds=0,
        zero_amount=0, refund_share=0.0, first_date="2023-01-02" if valid else None,
        last_date=last_date if valid else None, as_of="2024-01-31",
    )  # fmt: skip


def parts() -> list[PartitionResult]:
    """Two partitions: 10 rows, 1 broken, drift bins (3, 1); 4 rows, 3 broken (mostly broken), drift bins (1, 3)."""
    empty = pd.DataFrame()
    return [
        PartitionResult(empty, part_report(10, 1), {"recency_days": [3.0, 1.0]}),
        PartitionResult(empty, part_report(4, 3), {"recency_days": [1.0, 3.0]}),
    ]


def test_check_parts_combines_and_judges_before_anything_is_written() -> None:
    day = dt.date(2024, 1, 31)
    report = check_parts(parts(), day, strict=False)
    assert (report.rows_read, report.rows_valid, report.rule_counts["bad_amount"]) == (14, 10, 4)
    with pytest.raises(ContractError, match=r"^--strict: 4 row\(s\) break the input contract \(4 bad amount\)$"):
        check_parts(parts(), day, strict=True)
    with pytest.raises(ContractError, match=r"^no valid transaction in the input \(3 rows read\)$"):
        check_parts([PartitionResult(pd.DataFrame(), part_report(3, 3), {})], day, strict=False)
    later = dt.date(2024, 6, 30)
    with pytest.raises(ContractError, match="--allow-future-as-of"):
        check_parts(parts(), later, strict=False)
    assert check_parts(parts(), later, strict=False, allow_future_as_of=True) == report


def test_summarise_is_the_one_summary_of_both_engines() -> None:
    """Hand-computed: drift bins (3, 1) + (1, 3) = shares (0.5, 0.5) against the reference (0.9, 0.1): PSI
    0.4 ln 1.8 + 0.4 ln 5 = 0.4 ln 9; the top customer (1 of 5) holds 100 of 150; equity 150 (no calibration);
    gold (expected value >= 100) 1, bronze 4. The local engine's population (rows in memory) and the Spark
    engine's (per-tier sums, the collected expected values) give the same summary."""
    model = make_model("7")
    model.meta = dataclasses.replace(
        model.meta, feature_reference={"recency_days": {"edges": [50.0], "shares": [0.9, 0.1]}}
    )
    scores = pd.DataFrame(
        {
            "expected_value": [0.0, 100.0, 0.0, 50.0, 0.0],
            "tier": ["bronze", "gold", "bronze", "bronze", "bronze"],
            "expected_profit": [-1.0, 90.0, 0.0, 45.0, -2.0],
            "value_at_risk": [0.0, 10.0, 0.0, 5.0, 0.0],
            "segment": ["low", "star", "low", "rising", "low"],
        }
    )
    day = dt.date(2024, 1, 31)
    results = parts()
    report = check_parts(results, day, strict=False)
    local = summarise(
        results, report, model, day, "out.parquet", population_of(scores, model), rows_written=2, partitions=2,
        resumed=1, started=0.0, input_warnings=["input file 'x.parquet': bad"],
    )  # fmt: skip
    assert local.psi == {"recency_days": pytest.approx(0.4 * math.log(9.0), rel=1e-12)}
    assert local.drift_warnings == [f"recency_days PSI {0.4 * math.log(9.0):.2f} > 0.25"]
    assert local.top20_value_share == pytest.approx(100.0 / 150.0, rel=1e-12)
    assert (local.equity, local.equity_low, local.equity_high) == (150.0, None, None)
    assert local.tier_counts == {"gold": 1, "bronze": 4}
    assert local.population["unprofitable"] == {"customers": 2, "expected_profit": -3.0}
    assert (local.customers_scored, local.rows_written, local.partitions, local.resumed_partitions) == (5, 2, 2, 1)
    assert local.input_warnings == [
        "input file 'x.parquet': bad",
        "partition 1: 3 of 4 rows (75%) break a rule",
    ]
    assert (local.output, local.model_version, local.as_of, local.report) == ("out.parquet", "7", "2024-01-31", report)
    by_tier = {"gold": (1, 100.0, 10_000.0), "bronze": (4, 50.0, 2_500.0)}  # Spark's tier_aggregates
    collected = {c: scores[c].to_numpy() for c in ("expected_profit", "value_at_risk", "tier", "segment")}
    spark = Population(scores["expected_value"].to_numpy(), tier_moments(by_tier, model.meta.tier_names),
                       {tier: n for tier, (n, _, _) in by_tier.items()}, **collected)  # fmt: skip
    remote = summarise(results, report, model, day, "out.parquet", spark, rows_written=2, partitions=2, resumed=1,
                       started=0.0, input_warnings=["input file 'x.parquet': bad"])  # fmt: skip
    assert dataclasses.replace(remote, seconds=0.0) == dataclasses.replace(local, seconds=0.0)
