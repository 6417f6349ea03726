"""Rolling-origin backtest: the whole pipeline refitted at each fold, and the level it must hold there.

The generator drifts (purchase intensity -5% per quarter, basket +2% per quarter, November/December peaks,
customers joining over time), so a model trained on earlier cutoffs and left alone would forecast the wrong
total; the level factor measured on the latest horizon and the seasonal factor must keep every fold within
+-10% of the actual total.

20,000 customers: the total spend of a population over 90 days is itself noisy (bootstrap coefficient of
variation 3.1% for the ~3,700 customers of a 5,000-customer log, 1.5% for 15,000 of 20,000), and the level
factor is estimated from one such window, so below ~20k customers +-10% is a matter of luck in some folds
(levels seen at 5k: 0.90-1.11 over 5 seeds; at 20k: 0.92-1.04 over 3 seeds; issue 3 note).
"""

from __future__ import annotations

import datetime as dt

import pytest

from features.contract import prepare_transactions
from features.synthetic import generate_transactions
from training.jobs import backtest, fold_dates
from training.pipeline import LEVEL_TOLERANCE
from training.report import backtest_markdown

AS_OF = dt.date(2024, 12, 30)
HORIZON = 90
FOLDS = 3


@pytest.fixture(scope="module")
def full_table():
    raw = generate_transactions(20_000, 730, seed=11)
    tx, _ = prepare_transactions(raw, as_of=AS_OF)
    return backtest(tx, as_of=AS_OF, horizon_days=HORIZON, folds=FOLDS, step_days=30, log=False)


@pytest.fixture(scope="module")
def table(full_table):
    """Rows of every customer (the one-time and repeat buyers' rows are checked apart)."""
    return full_table[full_table["group"] == "all"]


def test_fold_dates_end_one_horizon_before_as_of() -> None:
    assert fold_dates(AS_OF, HORIZON, 3, 30) == [dt.date(2024, 8, 2), dt.date(2024, 9, 1), dt.date(2024, 10, 1)]


@pytest.mark.slow  # the whole pipeline refitted at three folds
def test_every_fold_scores_every_model_on_the_same_customers(table) -> None:
    assert sorted(table["as_of"].unique()) == fold_dates(AS_OF, HORIZON, FOLDS, 30)
    for _, fold in table.groupby("as_of"):
        assert sorted(fold["model"]) == ["btyd", "model", "naive", "population_average"]
        assert fold["customers"].nunique() == 1


@pytest.mark.slow  # the whole pipeline refitted at three folds
def test_one_time_and_repeat_buyers_are_reported_apart(full_table) -> None:
    for _, fold in full_table.groupby("as_of"):
        customers = fold[fold["model"] == "model"].set_index("group")["customers"]
        assert customers["one_time"] + customers["repeat"] <= customers["all"]
        assert customers["one_time"] > 0 and customers["repeat"] > 0


@pytest.mark.slow  # the whole pipeline refitted at three folds
def test_level_holds_within_ten_percent_in_every_fold(table) -> None:
    level = table[table["model"] == "model"].set_index("as_of")["value_total_ratio"]
    assert len(level) == FOLDS
    assert ((level - 1.0).abs() <= LEVEL_TOLERANCE).all(), level.to_dict()


@pytest.mark.slow  # the whole pipeline refitted at three folds
def test_the_model_ranks_at_least_as_well_as_the_naive_baseline_in_every_fold(table) -> None:
    wide = table.pivot(index="as_of", columns="model", values=["churn_auc", "value_normalized_gini"])
    assert (wide["churn_auc"]["model"] > wide["churn_auc"]["naive"]).all()
    assert (wide["value_normalized_gini"]["model"] > wide["value_normalized_gini"]["naive"]).all()


@pytest.mark.slow  # the whole pipeline refitted at three folds
def test_backtest_report_shows_every_metric_side_by_side(full_table) -> None:
    text = backtest_markdown(full_table)
    assert text.count("### fold as of") == FOLDS * 3  # every customer, one-time and repeat buyers
    for metric in ("churn_pr_auc", "churn_log_loss", "churn_top_decile_lift", "value_mae", "value_decile_mape"):
        assert text.count(metric) == FOLDS * 3
    assert "model_within_10%" in text and "btyd_within_10%" in text
    assert "model = churn head" in text


COHORT_AS_OF = dt.date(2023, 10, 30)


@pytest.fixture(scope="module")
def cohort_table():
    """One acquisition cohort (first purchases in the first 12 weeks of 2023) that only ages: folds 2023-06-02,
    07-02 and 08-01, i.e. 5 to 7 months of history. BG/NBD + Gamma-Gamma over-forecasts the next 90 days there
    by about 30% (measured: 1.33 / 1.33 / 1.31 on seed 0); the model takes its level from BTYD rebased on BTYD's
    own error one horizon earlier (training/level.py). 10,000 customers: ~2,000 are still buying in a fold's
    next 90 days, so one window's total is itself noisy by a few percent."""
    raw = generate_transactions(10_000, seed=0, scenario="cohort")
    tx, _ = prepare_transactions(raw, as_of=COHORT_AS_OF)
    table = backtest(tx, as_of=COHORT_AS_OF, horizon_days=HORIZON, folds=FOLDS, step_days=30, log=False)
    return table[table["group"] == "all"]


@pytest.mark.slow  # the whole pipeline refitted at three folds
def test_level_holds_on_an_ageing_cohort(cohort_table) -> None:
    level = cohort_table.pivot(index="as_of", columns="model", values="value_total_ratio")
    assert list(level.index) == fold_dates(COHORT_AS_OF, HORIZON, FOLDS, 30)
    assert ((level["model"] - 1.0).abs() <= LEVEL_TOLERANCE).all(), level.to_dict()
    # the classical model alone does not hold it: the test would prove nothing on a log where it does
    assert ((level["btyd"] - 1.0).abs() > LEVEL_TOLERANCE).all(), level.to_dict()
