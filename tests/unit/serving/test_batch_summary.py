"""The nightly job's summary: the customer equity and its 80% interval (``serving.intervals.equity_interval`` on
the scored customers, from their moments), its text, and the Spark engine's per-tier aggregate read back as the
same moments."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from model_util import make_model

from features.contract import RULES, DataQualityReport
from serving.batch import JobSummary, equity_fields, population_moments, short_amount
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
