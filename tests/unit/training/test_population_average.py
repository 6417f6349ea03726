"""The population-average baseline and the one-time buyers' backtest rows on a hand-made log (figures in comments)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.contract import prepare_transactions
from features.kernel import compute_features, index_transactions
from training import baselines
from training.new_customers import population_average_rows

AS_OF = dt.date(2024, 1, 31)
H = 10  # training cutoff Jan 21, its window (Jan 21, Jan 31]; the scored window (Jan 31, Feb 10]
ROWS = [
    ("a", "2024-01-01", 10.0),  # one-time at Jan 21; buys 30 on Jan 25 -> stays, 30
    ("a", "2024-01-25", 30.0),
    ("b", "2024-01-05", 10.0),  # one-time at Jan 21; nothing until Jan 31 -> churns, 0
    ("b", "2024-02-05", 12.0),  # ... then stays in the scored window: 12
    ("c", "2024-01-02", 10.0),  # repeat at Jan 21; buys 20 on Jan 30 -> stays, 20
    ("c", "2024-01-10", 10.0),
    ("c", "2024-01-30", 20.0),
    ("c", "2024-02-02", 8.0),
    ("d", "2024-01-03", -5.0),  # only refunds: no purchase yet; -2 on Jan 28 -> churns, -2
    ("d", "2024-01-28", -2.0),
    ("e", "2024-01-25", 9.0),  # joins after the training cutoff; one-time at Jan 31, churns in the scored window
]


@pytest.fixture(scope="module")
def prep():
    tx, _ = prepare_transactions(pd.DataFrame(ROWS, columns=["customer_id", "timestamp", "amount"]))
    return index_transactions(tx)


def test_group_means_at_the_training_cutoff(prep) -> None:
    fitted = baselines.fit_population_average(prep, AS_OF, H)
    assert fitted.cutoff == dt.date(2024, 1, 21)
    assert baselines.GROUPS == ("no_purchase", "one_time", "repeat")
    assert fitted.customers == (1, 2, 1)  # d | a, b | c
    assert fitted.churn == (1.0, 0.5, 0.0)
    assert fitted.value == (-2.0, 15.0, 20.0)


def test_every_customer_gets_their_group_s_means(prep) -> None:
    frame = compute_features(prep, AS_OF)  # a, b, c, d, e
    churn, value = baselines.population_average(prep, AS_OF, H, frame)
    # at Jan 31: a repeat (Jan 1, Jan 25), b one-time, c repeat, d no purchase, e one-time
    np.testing.assert_array_equal(churn, [0.0, 0.5, 0.0, 1.0, 0.5])
    np.testing.assert_array_equal(value, [20.0, 15.0, 20.0, -2.0, 15.0])


def test_an_empty_group_gets_the_overall_mean() -> None:
    labeled = pd.DataFrame({"n_purchase_days": [1.0, 1.0, 3.0], "churned": [1, 0, 0], "future_value": [0.0, 6, 9]})
    fitted = baselines.PopulationAverage.fit(labeled, dt.date(2024, 1, 1), 30)
    assert fitted.churn == (1 / 3, 0.5, 0.0) and fitted.value == (5.0, 3.0, 9.0)
    nobody = baselines.PopulationAverage.fit(labeled.iloc[:0], None, 30)
    assert all(np.isnan(nobody.churn)) and nobody.customers == (0, 0, 0)


def test_backtest_rows_of_the_one_time_group(prep) -> None:
    table = population_average_rows(prep, AS_OF, H).set_index("group")
    assert set(table["model"]) == {baselines.POPULATION_AVERAGE}
    one = table.loc["one_time"]
    # b (stays, 12) and e (churns, 0), both scored 0.5 and 15
    assert one["customers"] == 2
    assert one["churn_auc"] == 0.5 and one["churn_brier"] == 0.25
    assert one["value_mae"] == 9.0  # (|12 - 15| + |0 - 15|) / 2
    assert one["value_total_ratio"] == 2.5  # 30 / 12
    assert table.loc["all", "customers"] == 5 and table.loc["repeat", "customers"] == 2


def test_customer_groups_match_the_backtest_s() -> None:
    frame = pd.DataFrame({"n_purchase_days": [0.0, 1.0, 2.0, 5.0]})
    groups = baselines.customer_groups(frame)
    assert {k: v.tolist() for k, v in groups.items()} == {
        "all": [True] * 4,
        "one_time": [False, True, False, False],
        "repeat": [False, False, True, True],
    }


def test_nothing_labeled_gives_no_entry(prep) -> None:
    frame = compute_features(prep, AS_OF)
    entries = baselines.population_average_scores(prep, AS_OF, H, frame)
    assert [name for name, *_ in entries] == [baselines.POPULATION_AVERAGE]
    # as_of - H = Dec 27, 2023: nobody had a transaction yet
    assert baselines.population_average_scores(prep, dt.date(2024, 1, 6), H, frame) == ()
    assert population_average_rows(prep, dt.date(2024, 1, 6), H).empty
