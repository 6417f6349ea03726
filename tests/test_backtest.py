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
from training.report import LEVEL_TOLERANCE, backtest_markdown

AS_OF = dt.date(2024, 12, 30)
HORIZON = 90
FOLDS = 3


@pytest.fixture(scope="module")
def table():
    raw = generate_transactions(20_000, 730, seed=11)
    tx, _ = prepare_transactions(raw, as_of=AS_OF)
    return backtest(tx, as_of=AS_OF, horizon_days=HORIZON, folds=FOLDS, step_days=30, log=False)


def test_fold_dates_end_one_horizon_before_as_of() -> None:
    assert fold_dates(AS_OF, HORIZON, 3, 30) == [dt.date(2024, 8, 2), dt.date(2024, 9, 1), dt.date(2024, 10, 1)]


def test_every_fold_scores_all_three_models_on_the_same_customers(table) -> None:
    assert sorted(table["as_of"].unique()) == fold_dates(AS_OF, HORIZON, FOLDS, 30)
    for _, fold in table.groupby("as_of"):
        assert sorted(fold["model"]) == ["btyd", "lightgbm", "naive"]
        assert fold["customers"].nunique() == 1


def test_level_holds_within_ten_percent_in_every_fold(table) -> None:
    level = table[table["model"] == "lightgbm"].set_index("as_of")["value_total_ratio"]
    assert ((level - 1.0).abs() <= LEVEL_TOLERANCE).all(), level.to_dict()


def test_lightgbm_ranks_at_least_as_well_as_the_naive_baseline_in_every_fold(table) -> None:
    wide = table.pivot(index="as_of", columns="model", values=["churn_auc", "value_normalized_gini"])
    assert (wide["churn_auc"]["lightgbm"] > wide["churn_auc"]["naive"]).all()
    assert (wide["value_normalized_gini"]["lightgbm"] > wide["value_normalized_gini"]["naive"]).all()


def test_backtest_report_shows_every_metric_side_by_side(table) -> None:
    text = backtest_markdown(table)
    assert text.count("### fold as of") == FOLDS
    for metric in ("churn_pr_auc", "churn_log_loss", "churn_top_decile_lift", "value_mae", "value_decile_mape"):
        assert text.count(metric) == FOLDS
    assert "lightgbm_within_10pct" in text
