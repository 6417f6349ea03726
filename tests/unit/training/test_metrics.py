"""training.metrics and training.tables: hand-computed fixtures, sklearn cross-checks, properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from serving.pareto import gains_curve
from training import metrics
from training.tables import comparison_table, to_markdown_table

# --------------------------------------------------------------------------------------------------------------
# churn metrics
# --------------------------------------------------------------------------------------------------------------

# Six customers, already sorted by score: churned = 1.
Y6 = np.array([1, 1, 0, 1, 0, 0], dtype=float)
P6 = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])


def test_churn_metrics_hand_computed() -> None:
    m = metrics.churn_metrics(Y6, P6)
    assert set(m) == {"auc", "pr_auc", "brier", "log_loss", "ece", "top_decile_lift", "churn_rate"}
    # AUC: 3 churners x 3 stayers = 9 pairs; 0.9 and 0.8 beat all 3 stayers (6), 0.4 beats 0.3 and 0.1 (2) -> 8/9
    assert m["auc"] == pytest.approx(8 / 9)
    # AP: churners found at ranks 1, 2, 4 -> precisions 1/1, 2/2, 3/4 -> (1 + 1 + 0.75) / 3
    assert m["pr_auc"] == pytest.approx(2.75 / 3)
    # Brier: (0.1² + 0.2² + 0.7² + 0.6² + 0.3² + 0.1²) / 6 = (.01 + .04 + .49 + .36 + .09 + .01) / 6 = 1.00 / 6
    assert m["brier"] == pytest.approx(1 / 6)
    # log loss: -(ln .9 + ln .8 + ln .3 + ln .4 + ln .7 + ln .9) / 6
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.3) + math.log(0.4) + math.log(0.7) + math.log(0.9)) / 6
    assert m["log_loss"] == pytest.approx(expected)
    # ECE: every customer alone in its bin (bins 9, 8, 7, 4, 3, 1): gaps .1, .2, .7, .6, .3, .1 -> 2.0 / 6
    assert m["ece"] == pytest.approx(1 / 3)
    # top 10% of 6 customers = 0.6 of the top one (a churner): rate 1 / overall 0.5 -> lift 2
    assert m["top_decile_lift"] == pytest.approx(2.0)
    assert m["churn_rate"] == pytest.approx(0.5)


def test_top_decile_lift_ten_customers() -> None:
    # 10 customers, 2 churners (rate 0.2); the single top-decile customer churned: 1.0 / 0.2 = 5
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=float)
    p = np.linspace(0.9, 0.0, 10)
    assert metrics.churn_metrics(y, p)["top_decile_lift"] == pytest.approx(5.0)


def test_top_decile_lift_breaks_ties_stably_by_order() -> None:
    # 10 customers with identical scores, 1 churner (rate 0.1): the top decile is the first row of the input
    y = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    p = np.full(10, 0.5)
    assert metrics.churn_metrics(y, p)["top_decile_lift"] == pytest.approx(0.0)  # row 0 did not churn: 0 / 0.1
    assert metrics.churn_metrics(y[::-1].copy(), p)["top_decile_lift"] == pytest.approx(0.0)
    assert metrics.churn_metrics(np.roll(y, -1), p)["top_decile_lift"] == pytest.approx(10.0)  # churner first: 1 / 0.1
    # 12 customers: the top decile is ceil(12 / 10) = 2 customers; scores 0.9, 0.8 -> one churner of two
    # -> 0.5 / (3 / 12) = 2
    y12 = np.array([1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0], dtype=float)
    p12 = np.linspace(0.9, 0.0, 12)
    p12[1] = 0.8
    assert metrics.churn_metrics(y12, p12)["top_decile_lift"] == pytest.approx(2.0)


def test_top_decile_lift_equals_first_decile_of_decile_table() -> None:
    rng = np.random.default_rng(5)
    churned = (rng.random(37) < 0.3).astype(float)
    p = np.round(rng.random(37), 1)  # many ties
    table = metrics.decile_table(rng.random(37), p, churned, p)
    first = table.iloc[0]
    assert first["customers"] == 4  # ceil(37 / 10)
    lift = metrics.churn_metrics(churned, p)["top_decile_lift"]
    assert lift == pytest.approx(first["actual_churn_rate"] / churned.mean())


def test_log_loss_clips_certain_mistakes() -> None:
    # one certain mistake: -ln(1e-15) / 2 (the correct certain prediction costs -ln(1 - 1e-15) ~ 1e-15)
    m = metrics.churn_metrics([1, 0], [0.0, 0.0])
    assert m["log_loss"] == pytest.approx(-math.log(1e-15) / 2)
    assert math.isfinite(m["log_loss"])


@pytest.mark.parametrize("seed", range(5))
def test_churn_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200).astype(float)
    p = np.round(np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1), 2)  # rounding creates ties
    m = metrics.churn_metrics(y, p)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)))


def test_single_class_gives_nan_ranking_metrics() -> None:
    for y in ([1, 1, 1, 1], [0, 0, 0, 0]):
        m = metrics.churn_metrics(y, [0.1, 0.4, 0.6, 0.9])
        assert math.isnan(m["auc"]) and math.isnan(m["pr_auc"])
        assert math.isfinite(m["brier"]) and math.isfinite(m["log_loss"]) and math.isfinite(m["ece"])


def test_ece_zero_when_bins_are_calibrated() -> None:
    # bin 2 (p = 0.25): 1 of 4 churned = 0.25; bin 7 (p = 0.75): 3 of 4 churned = 0.75 -> both gaps 0
    p = [0.25] * 4 + [0.75] * 4
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    assert metrics.churn_metrics(y, p)["ece"] == pytest.approx(0.0, abs=1e-12)
    table = metrics.calibration_curve(y, p)
    assert table["bin"].tolist() == [2, 7]
    assert table["count"].tolist() == [4, 4]
    assert table["observed_rate"].tolist() == pytest.approx([0.25, 0.75])
    assert table["mean_predicted"].tolist() == pytest.approx([0.25, 0.75])


def test_ece_weights_bins_by_count() -> None:
    # bin 1 (p = .1, 3 customers, none churned): gap .1; bin 9 (p = .9, 1 customer, not churned): gap .9
    # ECE = (3 x .1 + 1 x .9) / 4 = 1.2 / 4 = 0.3
    assert metrics.churn_metrics([0, 0, 0, 0], [0.1, 0.1, 0.1, 0.9])["ece"] == pytest.approx(0.3)


def test_probability_one_lands_in_last_bin() -> None:
    table = metrics.calibration_curve([1, 0], [1.0, 0.0])
    assert table["bin"].tolist() == [0, 9]


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError):
        metrics.churn_metrics([0, 1], [0.5])
    with pytest.raises(ValueError):
        metrics.churn_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        metrics.churn_metrics([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError):
        metrics.value_metrics([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError):
        metrics.value_metrics([], [])


# --------------------------------------------------------------------------------------------------------------
# value metrics
# --------------------------------------------------------------------------------------------------------------

A5 = np.array([10.0, 0.0, 30.0, 20.0, 40.0])
P5 = np.array([12.0, 4.0, 35.0, 20.0, 30.0])


def test_value_metrics_hand_computed() -> None:
    m = metrics.value_metrics(A5, P5)
    assert set(m) == {
        "mae",
        "rmse",
        "spearman",
        "normalized_gini",
        "top20_capture",
        "decile_mape",
        "total_ratio",
        "total_pred",
        "total_actual",
    }
    # errors pred - actual = [2, 4, 5, 0, -10]: MAE = 21 / 5; RMSE = sqrt((4 + 16 + 25 + 0 + 100) / 5) = sqrt(29)
    assert m["mae"] == pytest.approx(4.2)
    assert m["rmse"] == pytest.approx(math.sqrt(29))
    # ranks actual [2, 1, 4, 3, 5], pred [2, 1, 5, 3, 4]: sum d² = 2 -> 1 - 6 x 2 / (5 x 24) = 0.9
    assert m["spearman"] == pytest.approx(0.9)
    # by prediction the actuals are [30, 40, 20, 10, 0]: cumulative shares .3 .7 .9 1 1 (sum 3.9)
    #   gini = 3.9 / 5 - 6 / 10 = 0.18; oracle [40, 30, 20, 10, 0]: .4 .7 .9 1 1 (sum 4.0) -> 0.2; 0.18 / 0.2 = 0.9
    assert m["normalized_gini"] == pytest.approx(0.9)
    # top 20% of 5 = the single highest prediction (35) whose actual is 30 of 100
    assert m["top20_capture"] == pytest.approx(0.3)
    # 5 customers -> 5 one-customer deciles: |35-30|/30, |30-40|/40, |20-20|/20, |12-10|/10, (4 vs 0 skipped)
    #   (1/6 + 1/4 + 0 + 1/5) / 4 = (37/60) / 4 = 37/240
    assert m["decile_mape"] == pytest.approx(37 / 240)
    # totals 101 / 100
    assert m["total_pred"] == pytest.approx(101.0)
    assert m["total_actual"] == pytest.approx(100.0)
    assert m["total_ratio"] == pytest.approx(1.01)


def test_top20_capture_ten_customers() -> None:
    actual = np.array([5, 0, 10, 50, 20, 0, 5, 10, 0, 100], dtype=float)  # total 200
    pred = np.array([1, 2, 3, 9, 4, 5, 6, 7, 8, 10], dtype=float)
    # top 2 predictions: customer 9 (actual 100) and customer 3 (actual 50) -> 150 / 200
    assert metrics.value_metrics(actual, pred)["top20_capture"] == pytest.approx(0.75)


def test_decile_mape_two_per_decile() -> None:
    # 20 customers, predictions 20..1 -> 10 deciles of 2; each decile's actual sum = 5 + 5 = 10 and predicted sums
    # are 39, 35, ..., 3, so |pred - actual| / actual = 2.9, 2.5, 2.1, 1.7, 1.3, 0.9, 0.5, 0.1, 0.3, 0.7 (mean 1.3)
    pred = np.arange(20, 0, -1, dtype=float)
    actual = np.full(20, 5.0)
    pair_sums = pred[0::2] + pred[1::2]  # 39, 35, 31, 27, 23, 19, 15, 11, 7, 3
    expected = np.mean(np.abs(pair_sums - 10) / 10)  # (29+25+21+17+13+9+5+1+3+7)/10/10 = 1.3
    assert expected == pytest.approx(1.3)
    assert metrics.value_metrics(actual, pred)["decile_mape"] == pytest.approx(1.3)


def test_normalized_gini_perfect_reversed_and_ties() -> None:
    actual = np.array([3.0, 0.0, 7.0, 1.0, 9.0, 2.0])
    assert metrics.normalized_gini(actual, actual) == pytest.approx(1.0)
    assert metrics.normalized_gini(actual, -actual) == pytest.approx(-1.0)
    # all predictions tied -> random order on average -> 0, and top 20% holds 20% of the value
    assert metrics.normalized_gini(actual, np.ones(6)) == pytest.approx(0.0, abs=1e-12)
    assert metrics.value_metrics(actual, np.ones(6))["top20_capture"] == pytest.approx(0.2)
    # degenerate actuals
    assert math.isnan(metrics.normalized_gini(np.zeros(4), [1, 2, 3, 4]))
    assert math.isnan(metrics.normalized_gini(np.full(4, 2.0), [1, 2, 3, 4]))


def test_spearman_nan_for_constant_predictions() -> None:
    assert math.isnan(metrics.value_metrics([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])["spearman"])


actuals = st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=2, max_size=40)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_gini_invariant_under_increasing_transforms(data: st.DataObject) -> None:
    y = np.array(data.draw(actuals))
    pred = np.array(data.draw(st.lists(st.integers(-50, 50), min_size=y.size, max_size=y.size)), dtype=float)
    base = metrics.normalized_gini(y, pred)
    assume(not math.isnan(base))
    for transformed in (2 * pred + 7, np.exp(pred / 10), pred**3, np.arctan(pred)):
        assert metrics.normalized_gini(y, transformed) == pytest.approx(base, abs=1e-9)
    # and the order of the rows does not matter
    perm = np.random.default_rng(0).permutation(y.size)
    assert metrics.normalized_gini(y[perm], pred[perm]) == pytest.approx(base, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_top20_capture_is_a_share(data: st.DataObject) -> None:
    y = np.array(data.draw(actuals))
    assume(y.sum() > 0)
    pred = np.array(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=y.size, max_size=y.size)))
    capture = metrics.value_metrics(y, pred)["top20_capture"]
    assert 0.0 <= capture <= 1.0 + 1e-12
    # never above the oracle
    assert capture <= metrics.value_metrics(y, y)["top20_capture"] + 1e-12


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    scale=st.floats(min_value=0.01, max_value=100),
)
def test_total_ratio_scales_linearly(data: st.DataObject, scale: float) -> None:
    y = np.array(data.draw(actuals))
    assume(y.sum() > 1e-3)
    pred = np.array(data.draw(st.lists(st.floats(0, 1e3), min_size=y.size, max_size=y.size)))
    base = metrics.value_metrics(y, pred)["total_ratio"]
    assert metrics.value_metrics(y, scale * pred)["total_ratio"] == pytest.approx(scale * base, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------------------------------------
# curves and tables
# --------------------------------------------------------------------------------------------------------------


def test_gains_curve() -> None:
    # by score: actuals 30, 40, 20, 10, 0 of 100
    x, share = gains_curve(A5, by=P5)
    assert x.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert share.tolist() == pytest.approx([0, 0.3, 0.7, 0.9, 1.0, 1.0])
    _, churn_share = gains_curve(Y6, by=P6)
    assert churn_share.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])


def test_decile_table_sums_equal_totals() -> None:
    rng = np.random.default_rng(3)
    actual = rng.gamma(1, 50, 37)
    pred = actual + rng.normal(0, 20, 37)
    churned = (rng.random(37) < 0.3).astype(float)
    p = rng.random(37)
    table = metrics.decile_table(actual, pred, churned, p)
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["customers"].sum() == 37
    assert table["customers"].tolist() == [4] * 7 + [3] * 3
    assert table["sum_actual"].sum() == pytest.approx(actual.sum())
    assert table["sum_predicted"].sum() == pytest.approx(pred.sum())
    assert table["mean_predicted"].is_monotonic_decreasing
    assert (table["actual_churn_rate"] * table["customers"]).sum() == pytest.approx(churned.sum())
    assert (table["predicted_churn_rate"] * table["customers"]).sum() == pytest.approx(p.sum())
    plain = metrics.decile_table(actual, pred)
    assert "actual_churn_rate" not in plain and "predicted_churn_rate" not in plain


def test_comparison_and_markdown_tables() -> None:
    table = comparison_table({"a": {"auc": 0.7, "brier": 0.2}, "b": {"auc": 0.81234}}, ["auc", "brier"])
    assert list(table.index) == ["auc", "brier"]
    assert list(table.columns) == ["a", "b"]
    assert math.isnan(table.loc["brier", "b"])
    md = to_markdown_table(table)
    lines = md.splitlines()
    assert len(lines) == 4
    assert lines[0].split("|")[1].strip() == "metric"
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["auc", "0.700", "0.812"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["brier", "0.200", "nan"]
    assert set(lines[1]) <= set("|-:")
    frame = pd.DataFrame({"model": ["x|y"], "n": [3], "v": [1.23456]})
    header = to_markdown_table(frame.rename(columns={"n": "a|b"}), ".2f").splitlines()[0]
    assert "a\\|b" in header
    row = to_markdown_table(frame, ".2f").splitlines()[2]
    assert row.startswith("| x\\|y ") and row.endswith("|   3 | 1.23 |")


def test_key_lists_name_what_the_metrics_return() -> None:
    assert tuple(metrics.churn_metrics(Y6, P6)) == metrics.CHURN_KEYS
    assert tuple(metrics.value_metrics(A5, P5)) == metrics.VALUE_KEYS
    # the compared keys are the pipeline's prefixed names of metrics that exist
    assert metrics.COMPARED_CHURN_KEYS[0] == "churn_auc"
    assert {k.removeprefix("churn_") for k in metrics.COMPARED_CHURN_KEYS} <= set(metrics.CHURN_KEYS) - {"churn_rate"}
    assert {k.removeprefix("value_") for k in metrics.COMPARED_VALUE_KEYS} <= set(metrics.VALUE_KEYS)
    assert metrics.metric_label("value_normalized_gini") == "normalized Gini (1 = perfect)"
    assert metrics.metric_label("churn_rate") == "churn rate (share)"
