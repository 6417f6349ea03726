"""The level estimators on a hand-computed log, their choice by backtest, and the choice of head kinds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.contract import prepare_transactions
from features.kernel import date_to_day, index_transactions
from training import level
from training.pipeline import choose_head

# H = 10 days. Customer c first buys on Jan 22, after the anchor Jan 20 of the spend retention.
ROWS = [
    ("a", "2024-01-01", 10.0),
    ("a", "2024-01-15", 20.0),
    ("a", "2024-01-25", 30.0),
    ("b", "2024-01-12", 5.0),
    ("b", "2024-01-28", 15.0),
    ("c", "2024-01-22", 7.0),
]
H = 10


@pytest.fixture(scope="module")
def prep():
    raw = pd.DataFrame(ROWS, columns=["customer_id", "timestamp", "amount"])
    tx, _ = prepare_transactions(raw)
    return index_transactions(tx)


def day(text: str) -> int:
    return date_to_day(text)


def test_spend_and_spend_retention_by_hand(prep) -> None:
    # (Jan 20, Jan 30]: a 30 + b 15 + c 7
    assert level.spend(prep, day("2024-01-20"), day("2024-01-30")) == 52.0
    # the same window, only customers present on Jan 20 (a, b): c's first purchase is later
    assert level.spend(prep, day("2024-01-20"), day("2024-01-30"), present_at=day("2024-01-20")) == 45.0
    # rho(Jan 20) = 45 / spend(Jan 10, Jan 20] = 45 / (a 20 + b 5)
    assert level.spend_retention(prep, day("2024-01-20"), H) == pytest.approx(1.8)
    # not enough history before the anchor: Jan 5 - 10 days is before the first transaction
    assert level.spend_retention(prep, day("2024-01-05"), H) is None


def test_estimates_by_hand(prep) -> None:
    found = level.estimates(prep, day("2024-01-30"), H, btyd_total=60.0, one_horizon_earlier=level.Totals(40.0, 50.0))
    assert found == pytest.approx({"btyd": 60.0, "btyd_rebased": 60.0 * 40 / 50, "run_rate": 52.0 * 1.8})
    assert "seasonal_run_rate" not in found, "no year of history"
    assert set(level.estimates(prep, day("2024-01-30"), H, 60.0, None)) == {"btyd", "run_rate"}


def test_choose_keeps_the_estimator_with_the_smallest_backtest_error() -> None:
    at_as_of = {"btyd": 100.0, "run_rate": 80.0}
    backtests = [({"btyd": 130.0, "run_rate": 95.0}, 100.0), ({"btyd": 120.0, "run_rate": 104.0}, 100.0)]
    choice = level.choose("auto", at_as_of, backtests)
    assert (choice.source, choice.total) == ("run_rate", 80.0)
    assert choice.backtest_errors["btyd"] == pytest.approx((math.log(1.3) + math.log(1.2)) / 2)
    assert "run_rate" in choice.why


def test_rebased_btyd_replaces_a_btyd_that_backtests_badly() -> None:
    at_as_of = {"btyd": 100.0, "btyd_rebased": 75.0}
    # btyd can be backtested (31% too high) but btyd_rebased cannot (no labeled cutoff two horizons back)
    choice = level.choose("auto", at_as_of, [({"btyd": 131.0}, 100.0)])
    assert (choice.source, choice.total) == ("btyd_rebased", 75.0)
    # a btyd that backtests within 10% stays
    assert level.choose("auto", at_as_of, [({"btyd": 105.0}, 100.0)]).source == "btyd"


def test_without_any_backtest_the_rebased_btyd_is_preferred_then_btyd() -> None:
    assert level.choose("auto", {"btyd": 100.0, "btyd_rebased": 90.0}, []).source == "btyd_rebased"
    assert level.choose("auto", {"btyd": 100.0}, []).source == "btyd"


def test_a_forced_source_needs_the_history_for_it() -> None:
    assert level.choose("btyd", {"btyd": 100.0, "run_rate": 80.0}, []).total == 100.0
    with pytest.raises(ValueError, match="needs more history"):
        level.choose("seasonal_run_rate", {"btyd": 100.0}, [])
    with pytest.raises(ValueError, match="must be one of"):
        level.choose("validation", {"btyd": 100.0}, [])


def value_metrics(gini: float, spearman: float, top20: float, mae: float) -> dict[str, float]:
    return {"value_normalized_gini": gini, "value_spearman": spearman, "value_top20_capture": top20, "value_mae": mae}


def test_a_head_replaces_btyd_only_when_it_is_no_worse_on_every_goal_metric() -> None:
    metrics = {
        "btyd": value_metrics(0.80, 0.50, 0.60, 10.0),
        "hybrid": value_metrics(0.81, 0.47, 0.61, 9.0),  # better Gini, worse Spearman: not taken
        "lightgbm": value_metrics(0.805, 0.50, 0.60, 10.0),  # ties or beats on all: taken
    }
    kind, why = choose_head(metrics, "value")
    assert kind == "lightgbm" and "lightgbm" in why
    metrics["lightgbm"] = value_metrics(0.805, 0.50, 0.60, 10.5)  # worse MAE
    assert choose_head(metrics, "value")[0] == "btyd"


def test_churn_head_is_chosen_by_auc_among_those_not_below_btyd() -> None:
    metrics = {"btyd": {"churn_auc": 0.80}, "lightgbm": {"churn_auc": 0.82}, "hybrid": {"churn_auc": 0.83}}
    assert choose_head(metrics, "churn")[0] == "hybrid"
    metrics["hybrid"]["churn_auc"] = metrics["lightgbm"]["churn_auc"] = 0.79
    assert choose_head(metrics, "churn")[0] == "btyd"


def test_churn_rate_by_hand(prep) -> None:
    # on Jan 12 a and b are present; in (Jan 12, Jan 22] only a buys (Jan 15)
    assert level.churn_rate(prep, day("2024-01-12"), H) == pytest.approx(0.5)
    # on Jan 22 c is present too; a (Jan 25) and b (Jan 28) buy, c does not
    assert level.churn_rate(prep, day("2024-01-22"), H) == pytest.approx(1 / 3)


def test_churn_estimates_by_hand(prep) -> None:
    found = level.churn_estimates(prep, day("2024-01-22"), H, btyd_mean=0.4, btyd_mean_earlier=0.6)
    # recent = the rate one horizon earlier (Jan 12); btyd_rebased = BTYD's mean moved by its error on Jan 12
    rebased = 1 / (1 + math.exp(-(level.logit(0.4) + level.logit(0.5) - level.logit(0.6))))
    assert found == pytest.approx({"recent": 0.5, "btyd_rebased": rebased, "btyd": 0.4})
    assert rebased == pytest.approx(0.3077, abs=1e-4)


def test_churn_rate_choice_and_shift() -> None:
    backtests = [({"recent": 0.5, "btyd_rebased": 0.62}, 0.6)]
    choice = level.choose_churn_rate("auto", {"recent": 0.5, "btyd_rebased": 0.7}, backtests)
    assert (choice.source, choice.total) == ("btyd_rebased", 0.7)
    assert level.choose_churn_rate("auto", {"recent": 0.5, "btyd_rebased": 0.7}, []).source == "recent"
    assert level.choose_churn_rate("auto", {}, []).source == "none"
    p = np.array([0.1, 0.2, 0.5, 0.9])
    shift = level.shift_to_mean(p, 0.6)
    moved = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + shift)))
    assert moved.mean() == pytest.approx(0.6, abs=1e-9)
    assert np.all(np.diff(moved) > 0), "the order of customers is kept"


def test_last_years_season_wins_when_it_backtests_within_ten_percent() -> None:
    at_as_of = {"btyd_rebased": 80.0, "seasonal_run_rate": 103.0}
    # summer backtests: the rebased BTYD is closer there, but the window ahead is the peak that last year foresees
    backtests = [({"btyd_rebased": 101.0, "seasonal_run_rate": 106.0}, 100.0)]
    assert level.choose("auto", at_as_of, backtests).source == "seasonal_run_rate"
    # a season that backtests badly (12% off) does not win on that ground
    backtests = [({"btyd_rebased": 101.0, "seasonal_run_rate": 112.0}, 100.0)]
    assert level.choose("auto", at_as_of, backtests).source == "btyd_rebased"
