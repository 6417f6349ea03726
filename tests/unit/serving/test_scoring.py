"""serving.scoring: tiers, segments, coded reasons and their two renderings (JSON objects and text columns), on
hand-made arrays and a hand-built ScoredBatch; score_customers on a tiny two-booster model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from model_util import COLUMNS, make_model

from serving.scoring import (
    INTERVAL_FIELDS,
    LOWERS,
    OPTIONAL_FIELDS,
    RAISES,
    TIMING_FIELDS,
    ScoredBatch,
    assign_segments,
    assign_tiers,
    json_rows,
    output_columns,
    reason_objects,
    reason_text,
    reason_text_columns,
    score_customers,
    timing_columns,
    top_reasons,
)
from serving.timing import TimingScores


@pytest.fixture(scope="module")
def model():
    return make_model("3")


def test_top_reasons_largest_absolute_first_with_stable_ties() -> None:
    contributions = np.array([[0.0, -0.5, 0.2, 0.5], [0.2, -0.2, 0.2, 0.1]])
    X = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, np.nan, 7.0, 8.0]])
    feature, value, contribution, count = top_reasons(contributions, X, 3)
    assert feature.tolist() == [[1, 3, 2], [0, 1, 2]]  # |-0.5| = |0.5|: column 1 before 3; 0.2 ties keep order
    np.testing.assert_array_equal(value, [[2.0, 4.0, 3.0], [5.0, np.nan, 7.0]])
    assert contribution.tolist() == [[-0.5, 0.5, 0.2], [0.2, -0.2, 0.2]]
    assert count.tolist() == [3, 3]


def test_zero_contributions_are_dropped_and_later_reasons_move_up() -> None:
    contributions = np.array([[0.0, 0.0, 0.0, 0.3], [0.0, 0.0, 0.0, 0.0]])
    feature, _, contribution, count = top_reasons(contributions, np.ones((2, 4)), 3)
    assert feature[0, 0] == 3 and contribution[0].tolist() == [0.3, 0.0, 0.0]
    assert count.tolist() == [1, 0]


def test_fewer_features_than_reasons_and_no_rows() -> None:
    feature, _, _, count = top_reasons(np.array([[0.1, -0.4]]), np.array([[1.0, 2.0]]), 3)
    assert feature.tolist() == [[1, 0]] and count.tolist() == [2]
    feature, value, contribution, count = top_reasons(np.empty((0, 4)), np.empty((0, 4)), 3)
    assert feature.shape == value.shape == contribution.shape == (0, 3) and count.shape == (0,)


def test_tiers_take_the_first_threshold_reached(model) -> None:
    # thresholds (100, 0): gold from 100 up (the bound belongs to its tier, the model card's ">="), bronze below,
    # also below 0 (the last tier takes the rest)
    tiers = assign_tiers(np.array([150.0, 100.0, 99.99, 0.0, -1.0]), model.meta)
    assert tiers.tolist() == ["gold", "gold", "bronze", "bronze", "bronze"]


def test_segments_split_at_the_two_thresholds(model) -> None:
    # current value threshold 50, future value threshold 100; missing current value counts as 0
    current = np.array([60.0, 10.0, 60.0, np.nan, 50.0])
    future = np.array([150.0, 150.0, 50.0, 50.0, 100.0])
    assert assign_segments(current, future, model.meta).tolist() == ["star", "rising", "fading", "low", "star"]


def hand_batch() -> ScoredBatch:
    """Three customers, three reason slots: 3, 1 and 0 reasons; a missing value and a value needing rounding."""
    return ScoredBatch(
        customer_id=np.array(["c1", "c2", "c3"], dtype=object),
        churn_probability=np.array([0.123456789, 0.5, 1.0]),
        expected_value=np.array([10.123456, 0.0, 2.5]),
        value_at_risk=np.array([1.2497, 0.0, 2.5]),
        expected_profit=np.array([8.123456, -0.5, 2.5]),
        tier=np.array(["gold", "bronze", "bronze"], dtype=object),
        segment=np.array(["star", "low", "rising"], dtype=object),
        reason_feature=np.array([[0, 2, 1], [1, 0, 0], [0, 0, 0]]),
        reason_value=np.array([[12.34567, np.nan, 0.5], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        reason_contribution=np.array([[0.81234, -0.4, 0.1], [-0.25, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        reason_count=np.array([3, 1, 0]),
        feature_names=("recency_days", "spend_365d", "n_purchase_days"),
        feature_descriptions=("Days since last purchase", "Net spend, last 365 days", "Purchase days"),
    )


def test_reason_objects_are_rounded_and_name_their_effect() -> None:
    batch = hand_batch()
    assert reason_objects(batch, 0) == [
        {
            "feature": "recency_days",
            "description": "Days since last purchase",
            "value": 12.3457,
            "effect": RAISES,
            "contribution": 0.8123,
            "cause": "engagement",
            "fact": "no purchase for 12 days",
        },
        {
            "feature": "n_purchase_days",
            "description": "Purchase days",
            "value": None,
            "effect": LOWERS,
            "contribution": -0.4,
            "cause": "engagement",
            "fact": "Purchase days: missing",
        },
        {
            "feature": "spend_365d",
            "description": "Net spend, last 365 days",
            "value": 0.5,
            "effect": RAISES,
            "contribution": 0.1,
            "cause": "value",
            "fact": "net spend 0.50 in the last 365 days",
        },
    ]
    assert [r["feature"] for r in reason_objects(batch, 1)] == ["spend_365d"] and reason_objects(batch, 2) == []


def test_reason_text_columns_are_the_text_of_the_reason_objects() -> None:
    batch = hand_batch()
    columns = reason_text_columns(batch)
    assert list(columns) == ["reason_1", "reason_2", "reason_3"]
    assert columns["reason_1"][0] == "no purchase for 12 days — engagement fading (raises churn risk)"
    assert columns["reason_2"][0] == "Purchase days: missing — engagement fading (lowers churn risk)"
    for row in range(len(batch)):
        objects = reason_objects(batch, row)
        for k in range(3):
            text = columns[f"reason_{k + 1}"][row]
            if k >= len(objects):
                assert pd.isna(text)  # past the row's last reason
                continue
            o = objects[k]
            assert text == reason_text(o["fact"], o["cause"], o["effect"])


def test_json_rows_round_only_the_written_values() -> None:
    batch = hand_batch()
    rows = json_rows(batch)
    assert rows[0] | {"reasons": None} == {
        "customer_id": "c1",
        "churn_probability": 0.123457,
        "expected_value": 10.1235,
        "value_at_risk": 1.2497,
        "expected_profit": 8.1235,
        "tier": "gold",
        "segment": "star",
        **dict.fromkeys(OPTIONAL_FIELDS),  # a batch without intervals, timing or uplift: every such field is null
        "scorecard_tier": None,
        "churn_cause": "engagement",  # the largest reason that raises churn risk: recency
        "reasons": None,
    }
    assert batch.churn_probability[0] == 0.123456789  # the batch keeps the exact values
    assert "reasons" not in json_rows(batch, reasons=False)[0]


def test_interval_fields_are_rounded_in_json_and_exact_in_columns() -> None:
    value = np.array([1.234567, 0.0, np.nan])
    count = np.array([2.0, 0.0, np.nan])
    batch = dataclasses.replace(
        hand_batch(), **{f: value if f.startswith("value_") else count for f in INTERVAL_FIELDS}
    )
    rows = json_rows(batch, reasons=False)
    assert [rows[i]["value_p10"] for i in range(3)] == [1.2346, 0.0, None]  # NaN (no calibration) -> null
    assert [rows[i]["purchases_high"] for i in range(3)] == [2, 0, None]
    assert isinstance(rows[0]["purchases_low"], int)
    # after the segment: intervals, timing, uplift, the scorecard's scores, then its tier
    assert list(rows[0])[7:] == [*OPTIONAL_FIELDS, "scorecard_tier"]
    table = output_columns(batch)
    assert list(table.columns[7 : 7 + len(OPTIONAL_FIELDS)]) == list(OPTIONAL_FIELDS)
    assert table["value_p90"].iloc[0] == 1.234567
    assert output_columns(hand_batch())["value_p10"].isna().all()  # no intervals: NaN columns, same schema
    assert hand_batch().take(np.array([1])).value_p10 is None
    np.testing.assert_array_equal(batch.take(np.array([2, 0])).purchases_p50, [np.nan, 2.0])


def test_every_optional_output_is_a_field_of_the_batch() -> None:
    fields = {f.name for f in dataclasses.fields(ScoredBatch)}
    assert set(OPTIONAL_FIELDS) <= fields  # TIMING_DAYS and the batch's purchase_within_<d>d fields agree


def test_timing_columns_put_each_day_in_its_column_and_nan_beyond_the_horizon() -> None:
    timing = TimingScores(
        days=(7, 14, 30, 45),  # a 45-day horizon: 60 and 90 lie beyond it, 45 is not an output column
        purchase_within=np.array([[0.1, 0.2, 0.3, 0.4]]),
        expected_days_to_next=np.array([12.5]),
    )
    columns = timing_columns(timing)
    assert list(columns) == list(TIMING_FIELDS)
    assert [float(columns[f][0]) for f in TIMING_FIELDS[:3]] == [0.1, 0.2, 0.3]
    assert np.isnan(columns["purchase_within_60d"][0]) and np.isnan(columns["purchase_within_90d"][0])
    assert columns["expected_days_to_next_purchase"][0] == 12.5
    assert timing_columns(None) == {}
    row = json_rows(dataclasses.replace(hand_batch().take(np.array([0])), **columns), reasons=False)[0]
    assert row["purchase_within_30d"] == 0.3 and row["purchase_within_90d"] is None
    assert row["expected_days_to_next_purchase"] == 12.5


def test_take_keeps_every_per_customer_array_aligned() -> None:
    picked = hand_batch().take(np.array([2, 0]))
    assert picked.customer_id.tolist() == ["c3", "c1"] and picked.reason_count.tolist() == [0, 3]
    assert picked.reason_feature.tolist() == [[0, 0, 0], [0, 2, 1]]
    assert picked.feature_names == hand_batch().feature_names


def test_score_customers_gives_the_model_s_scores_and_the_columns_of_the_same_batch(model) -> None:
    X = np.array([[10.0, 500.0, 3.0], [90.0, 5.0, 1.0], [50.0, np.nan, 2.0]])
    batch = score_customers(model, ["x", "y", "z"], X)
    scores = model.score(X)
    np.testing.assert_array_equal(batch.churn_probability, scores.churn_probability)
    np.testing.assert_array_equal(batch.value_at_risk, scores.churn_probability * scores.expected_value)
    assert batch.tier.tolist() == assign_tiers(scores.expected_value, model.meta).tolist()
    current = X[:, COLUMNS.index("spend_365d")]
    assert batch.segment.tolist() == assign_segments(current, scores.expected_value, model.meta).tolist()
    contributions = model.churn_contributions(X)
    feature, value, contribution, count = top_reasons(contributions, X, 3)
    np.testing.assert_array_equal(batch.reason_feature, feature)
    np.testing.assert_array_equal(batch.reason_value, value)
    np.testing.assert_array_equal(batch.reason_contribution, contribution)
    np.testing.assert_array_equal(batch.reason_count, count)
    table = output_columns(batch)
    assert table["customer_id"].tolist() == ["x", "y", "z"]
    assert table["reason_1"].tolist()[0] == reason_text_columns(batch)["reason_1"][0]
    without = score_customers(model, ["x", "y", "z"], X, reasons=0)
    assert without.reason_count.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(without.value_at_risk, batch.value_at_risk)
    np.testing.assert_array_equal(batch.expected_profit, scores.expected_value)  # default economics: the value
    assert batch.uplift is None and table["uplift"].isna().all()  # no uplift heads: NaN column


def test_score_customers_carries_the_economics_and_the_model_s_uplift(model, monkeypatch) -> None:
    from serving.economics import Economics, expected_profit

    X = np.array([[10.0, 500.0, 3.0], [90.0, 5.0, 1.0]])
    economics = Economics(gross_margin=0.5, cost_to_serve_per_order=2.0)
    batch = score_customers(model, ["x", "y"], X, reasons=0, economics=economics)
    expected = expected_profit(model.score(X).expected_value, X, model.feature_columns, model.meta, economics)
    np.testing.assert_array_equal(batch.expected_profit, expected)
    scores = model.score(X)
    scores.uplift = np.array([0.25, -0.125])
    monkeypatch.setattr(model, "score", lambda X, num_threads=0: scores)
    with_uplift = score_customers(model, ["x", "y"], X, reasons=0)
    assert with_uplift.uplift.tolist() == [0.25, -0.125]
    assert [r["uplift"] for r in json_rows(with_uplift, reasons=False)] == [0.25, -0.125]
    assert output_columns(with_uplift)["uplift"].tolist() == [0.25, -0.125]


def test_the_documented_prediction_has_every_optional_output() -> None:
    from serving.schemas import Prediction

    assert set(OPTIONAL_FIELDS) <= set(Prediction.model_fields)
