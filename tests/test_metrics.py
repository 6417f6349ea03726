"""Metrics, tables and plots of training.evaluate: hand-computed fixtures, sklearn cross-checks, properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from training import evaluate as ev

# --------------------------------------------------------------------------------------------------------------
# churn metrics
# --------------------------------------------------------------------------------------------------------------

# Six customers, already sorted by score: churned = 1.
Y6 = np.array([1, 1, 0, 1, 0, 0], dtype=float)
P6 = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])


def test_churn_metrics_hand_computed() -> None:
    m = ev.churn_metrics(Y6, P6)
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
    assert ev.churn_metrics(y, p)["top_decile_lift"] == pytest.approx(5.0)


def test_top_decile_lift_breaks_ties_stably_by_order() -> None:
    # 10 customers with identical scores, 1 churner (rate 0.1): the top decile is the first row of the input
    y = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    p = np.full(10, 0.5)
    assert ev.churn_metrics(y, p)["top_decile_lift"] == pytest.approx(0.0)  # row 0 did not churn: 0 / 0.1
    assert ev.churn_metrics(y[::-1].copy(), p)["top_decile_lift"] == pytest.approx(0.0)
    assert ev.churn_metrics(np.roll(y, -1), p)["top_decile_lift"] == pytest.approx(10.0)  # churner first: 1 / 0.1
    # 12 customers: the top decile is ceil(12 / 10) = 2 customers; scores 0.9, 0.8 -> one churner of two
    # -> 0.5 / (3 / 12) = 2
    y12 = np.array([1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0], dtype=float)
    p12 = np.linspace(0.9, 0.0, 12)
    p12[1] = 0.8
    assert ev.churn_metrics(y12, p12)["top_decile_lift"] == pytest.approx(2.0)


def test_top_decile_lift_equals_first_decile_of_decile_table() -> None:
    rng = np.random.default_rng(5)
    churned = (rng.random(37) < 0.3).astype(float)
    p = np.round(rng.random(37), 1)  # many ties
    table = ev.decile_table(rng.random(37), p, churned, p)
    first = table.iloc[0]
    assert first["customers"] == 4  # ceil(37 / 10)
    lift = ev.churn_metrics(churned, p)["top_decile_lift"]
    assert lift == pytest.approx(first["actual_churn_rate"] / churned.mean())


def test_log_loss_clips_certain_mistakes() -> None:
    # one certain mistake: -ln(1e-15) / 2 (the correct certain prediction costs -ln(1 - 1e-15) ~ 1e-15)
    m = ev.churn_metrics([1, 0], [0.0, 0.0])
    assert m["log_loss"] == pytest.approx(-math.log(1e-15) / 2)
    assert math.isfinite(m["log_loss"])


@pytest.mark.parametrize("seed", range(5))
def test_churn_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200).astype(float)
    p = np.round(np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1), 2)  # rounding creates ties
    m = ev.churn_metrics(y, p)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)))


def test_single_class_gives_nan_ranking_metrics() -> None:
    for y in ([1, 1, 1, 1], [0, 0, 0, 0]):
        m = ev.churn_metrics(y, [0.1, 0.4, 0.6, 0.9])
        assert math.isnan(m["auc"]) and math.isnan(m["pr_auc"])
        assert math.isfinite(m["brier"]) and math.isfinite(m["log_loss"]) and math.isfinite(m["ece"])


def test_ece_zero_when_bins_are_calibrated() -> None:
    # bin 2 (p = 0.25): 1 of 4 churned = 0.25; bin 7 (p = 0.75): 3 of 4 churned = 0.75 -> both gaps 0
    p = [0.25] * 4 + [0.75] * 4
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    assert ev.churn_metrics(y, p)["ece"] == pytest.approx(0.0, abs=1e-12)
    table = ev.calibration_curve(y, p)
    assert table["bin"].tolist() == [2, 7]
    assert table["count"].tolist() == [4, 4]
    assert table["observed_rate"].tolist() == pytest.approx([0.25, 0.75])
    assert table["mean_predicted"].tolist() == pytest.approx([0.25, 0.75])


def test_ece_weights_bins_by_count() -> None:
    # bin 1 (p = .1, 3 customers, none churned): gap .1; bin 9 (p = .9, 1 customer, not churned): gap .9
    # ECE = (3 x .1 + 1 x .9) / 4 = 1.2 / 4 = 0.3
    assert ev.churn_metrics([0, 0, 0, 0], [0.1, 0.1, 0.1, 0.9])["ece"] == pytest.approx(0.3)


def test_probability_one_lands_in_last_bin() -> None:
    table = ev.calibration_curve([1, 0], [1.0, 0.0])
    assert table["bin"].tolist() == [0, 9]


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError):
        ev.churn_metrics([0, 1], [0.5])
    with pytest.raises(ValueError):
        ev.churn_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        ev.churn_metrics([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError):
        ev.value_metrics([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError):
        ev.value_metrics([], [])


# --------------------------------------------------------------------------------------------------------------
# value metrics
# --------------------------------------------------------------------------------------------------------------

A5 = np.array([10.0, 0.0, 30.0, 20.0, 40.0])
P5 = np.array([12.0, 4.0, 35.0, 20.0, 30.0])


def test_value_metrics_hand_computed() -> None:
    m = ev.value_metrics(A5, P5)
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
    assert ev.value_metrics(actual, pred)["top20_capture"] == pytest.approx(0.75)


def test_decile_mape_two_per_decile() -> None:
    # 20 customers, predictions 20..1 -> 10 deciles of 2; each decile's actual sum = 5 + 5 = 10 and predicted sums
    # are 39, 35, ..., 3, so |pred - actual| / actual = 2.9, 2.5, 2.1, 1.7, 1.3, 0.9, 0.5, 0.1, 0.3, 0.7 (mean 1.3)
    pred = np.arange(20, 0, -1, dtype=float)
    actual = np.full(20, 5.0)
    pair_sums = pred[0::2] + pred[1::2]  # 39, 35, 31, 27, 23, 19, 15, 11, 7, 3
    expected = np.mean(np.abs(pair_sums - 10) / 10)  # (29+25+21+17+13+9+5+1+3+7)/10/10 = 1.3
    assert expected == pytest.approx(1.3)
    assert ev.value_metrics(actual, pred)["decile_mape"] == pytest.approx(1.3)


def test_normalized_gini_perfect_reversed_and_ties() -> None:
    actual = np.array([3.0, 0.0, 7.0, 1.0, 9.0, 2.0])
    assert ev.normalized_gini(actual, actual) == pytest.approx(1.0)
    assert ev.normalized_gini(actual, -actual) == pytest.approx(-1.0)
    # all predictions tied -> random order on average -> 0, and top 20% holds 20% of the value
    assert ev.normalized_gini(actual, np.ones(6)) == pytest.approx(0.0, abs=1e-12)
    assert ev.value_metrics(actual, np.ones(6))["top20_capture"] == pytest.approx(0.2)
    # degenerate actuals
    assert math.isnan(ev.normalized_gini(np.zeros(4), [1, 2, 3, 4]))
    assert math.isnan(ev.normalized_gini(np.full(4, 2.0), [1, 2, 3, 4]))


def test_spearman_nan_for_constant_predictions() -> None:
    assert math.isnan(ev.value_metrics([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])["spearman"])


actuals = st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=2, max_size=40)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_gini_invariant_under_increasing_transforms(data: st.DataObject) -> None:
    y = np.array(data.draw(actuals))
    pred = np.array(data.draw(st.lists(st.integers(-50, 50), min_size=y.size, max_size=y.size)), dtype=float)
    base = ev.normalized_gini(y, pred)
    assume(not math.isnan(base))
    for transformed in (2 * pred + 7, np.exp(pred / 10), pred**3, np.arctan(pred)):
        assert ev.normalized_gini(y, transformed) == pytest.approx(base, abs=1e-9)
    # and the order of the rows does not matter
    perm = np.random.default_rng(0).permutation(y.size)
    assert ev.normalized_gini(y[perm], pred[perm]) == pytest.approx(base, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_top20_capture_is_a_share(data: st.DataObject) -> None:
    y = np.array(data.draw(actuals))
    assume(y.sum() > 0)
    pred = np.array(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=y.size, max_size=y.size)))
    capture = ev.value_metrics(y, pred)["top20_capture"]
    assert 0.0 <= capture <= 1.0 + 1e-12
    # never above the oracle
    assert capture <= ev.value_metrics(y, y)["top20_capture"] + 1e-12


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    scale=st.floats(min_value=0.01, max_value=100),
)
def test_total_ratio_scales_linearly(data: st.DataObject, scale: float) -> None:
    y = np.array(data.draw(actuals))
    assume(y.sum() > 1e-3)
    pred = np.array(data.draw(st.lists(st.floats(0, 1e3), min_size=y.size, max_size=y.size)))
    base = ev.value_metrics(y, pred)["total_ratio"]
    assert ev.value_metrics(y, scale * pred)["total_ratio"] == pytest.approx(scale * base, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------------------------------------
# curves and tables
# --------------------------------------------------------------------------------------------------------------


def test_gains_curve() -> None:
    # by score: actuals 30, 40, 20, 10, 0 of 100
    x, share = ev.gains_curve(A5, P5)
    assert x.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert share.tolist() == pytest.approx([0, 0.3, 0.7, 0.9, 1.0, 1.0])
    _, churn_share = ev.gains_curve(Y6, P6)
    assert churn_share.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])


def test_decile_table_sums_equal_totals() -> None:
    rng = np.random.default_rng(3)
    actual = rng.gamma(1, 50, 37)
    pred = actual + rng.normal(0, 20, 37)
    churned = (rng.random(37) < 0.3).astype(float)
    p = rng.random(37)
    table = ev.decile_table(actual, pred, churned, p)
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["customers"].sum() == 37
    assert table["customers"].tolist() == [4] * 7 + [3] * 3
    assert table["sum_actual"].sum() == pytest.approx(actual.sum())
    assert table["sum_predicted"].sum() == pytest.approx(pred.sum())
    assert table["mean_predicted"].is_monotonic_decreasing
    assert (table["actual_churn_rate"] * table["customers"]).sum() == pytest.approx(churned.sum())
    assert (table["predicted_churn_rate"] * table["customers"]).sum() == pytest.approx(p.sum())
    plain = ev.decile_table(actual, pred)
    assert "actual_churn_rate" not in plain and "predicted_churn_rate" not in plain


def test_comparison_and_markdown_tables() -> None:
    table = ev.comparison_table({"a": {"auc": 0.7, "brier": 0.2}, "b": {"auc": 0.81234}}, ["auc", "brier"])
    assert list(table.index) == ["auc", "brier"]
    assert list(table.columns) == ["a", "b"]
    assert math.isnan(table.loc["brier", "b"])
    md = ev.to_markdown_table(table)
    lines = md.splitlines()
    assert len(lines) == 4
    assert lines[0].split("|")[1].strip() == "metric"
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["auc", "0.700", "0.812"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["brier", "0.200", "nan"]
    assert set(lines[1]) <= set("|-:")
    frame = pd.DataFrame({"model": ["x|y"], "n": [3], "v": [1.23456]})
    header = ev.to_markdown_table(frame.rename(columns={"n": "a|b"}), ".2f").splitlines()[0]
    assert "a\\|b" in header
    row = ev.to_markdown_table(frame, ".2f").splitlines()[2]
    assert row.startswith("| x\\|y ") and row.endswith("|   3 | 1.23 |")


# --------------------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------------------


def _save(fig, tmp_path, name: str) -> None:
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def churn_results() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    return {"good": (y, np.clip(0.4 * y + 0.6 * rng.random(300), 0, 1)), "random": (y, rng.random(300))}


@pytest.fixture(scope="module")
def value_results() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    actual = rng.gamma(0.5, 100, 300)
    return {"good": (actual, actual * rng.lognormal(0, 0.5, 300)), "random": (actual, rng.random(300))}


def test_plot_roc(churn_results, tmp_path) -> None:
    fig = ev.plot_roc(churn_results)
    assert len(fig.axes[0].lines) == 3  # two models + random diagonal
    _save(fig, tmp_path, "roc")


def test_plot_calibration(churn_results, tmp_path) -> None:
    fig = ev.plot_calibration(churn_results)
    assert len(fig.axes[0].lines) == 3  # two models + perfect diagonal
    _save(fig, tmp_path, "calibration")


def test_plot_gains(churn_results, tmp_path) -> None:
    fig = ev.plot_gains(churn_results)
    assert len(fig.axes[0].lines) == 4  # two models + random + perfect
    _save(fig, tmp_path, "gains")


def test_plot_gains_accepts_values(value_results, tmp_path) -> None:
    fig = ev.plot_gains(value_results)
    ax = fig.axes[0]
    assert len(ax.lines) == 4
    assert "value" in ax.get_ylabel()
    _save(fig, tmp_path, "gains_value")


def test_plot_lorenz(value_results, tmp_path) -> None:
    fig = ev.plot_lorenz(value_results)
    assert len(fig.axes[0].lines) == 4  # two models + oracle + random
    _save(fig, tmp_path, "lorenz")


def test_plot_feature_importance(tmp_path) -> None:
    names = [f"f{i}" for i in range(30)]
    fig = ev.plot_feature_importance(names, np.arange(30.0), top=20)
    ax = fig.axes[0]
    assert len(ax.patches) == 20
    assert ax.get_yticklabels()[-1].get_text() == "f29"  # largest on top
    _save(fig, tmp_path, "importance")


def test_plot_shap_summary(tmp_path) -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(size=(200, 20))
    values[::7, 3] = np.nan
    contributions = np.c_[values * np.arange(1, 21) / 10, np.full(200, -0.5)]  # trailing bias column
    contributions[np.isnan(contributions)] = 0.0
    names = [f"f{i}" for i in range(20)]
    fig = ev.plot_shap_summary(contributions, values, names, top=15)
    ax = fig.axes[0]
    assert len(ax.collections) == 15
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "f19"  # largest contributions on top
    _save(fig, tmp_path, "shap")


def test_plot_backtest(tmp_path) -> None:
    rows = [
        {"fold": f, "model": m, "churn_auc": 0.7 + 0.01 * f, "value_normalized_gini": 0.5, "customers": 10}
        for f in range(4)
        for m in ("lightgbm", "btyd", "naive")
    ]
    fig = ev.plot_backtest(pd.DataFrame(rows))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2  # churn_auc, value_normalized_gini ("customers" is not a metric)
    assert all(len(ax.lines) == 3 for ax in visible)
    _save(fig, tmp_path, "backtest")
