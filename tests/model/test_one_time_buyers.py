"""One-time buyers of an ageing cohort (the generator's `cohort` scenario, 12 months of history, 182-day horizon):
BG/NBD gives them all P(alive) = 1 and ranks them at chance; the product, scored on what their first purchase day
said, ranks them and misses their spend by less than the population average. One fixed seed: deterministic."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest

from features.contract import prepare_transactions
from features.kernel import FIRST_PURCHASE_FEATURES, index_transactions
from features.synthetic import generate_transactions
from training.new_customers import evaluate_one_time

AS_OF = dt.date(2023, 12, 31)  # 365 days of the cohort scenario (first day 2023-01-01)
H = 182


@pytest.fixture(scope="module")
def prep():
    tx, _ = prepare_transactions(generate_transactions(6_000, 365 + H, seed=0, scenario="cohort"))
    return index_transactions(tx)


@pytest.fixture(scope="module")
def one_time(prep) -> pd.DataFrame:
    return evaluate_one_time(prep, AS_OF, H, seed=0).set_index("model")


def test_the_product_beats_the_population_average(one_time: pd.DataFrame) -> None:
    model, average = one_time.loc["model"], one_time.loc["population_average"]
    assert model["customers"] > 3_000 and model["churn_churn_rate"] > 0.9  # most one-time buyers never come back
    assert model["churn_auc"] > 0.6 and model["value_spearman"] > 0.03
    assert model["value_mae"] < 0.8 * average["value_mae"]
    assert average["churn_auc"] == 0.5


def test_bgnbd_ranks_them_at_chance(one_time: pd.DataFrame) -> None:
    assert abs(one_time.loc["btyd", "churn_auc"] - 0.5) < 0.05
    assert one_time.loc["model", "churn_auc"] > one_time.loc["btyd", "churn_auc"] + 0.1


def test_the_first_purchase_features_carry_the_gain(prep, one_time: pd.DataFrame) -> None:
    without = dataclasses.replace(prep, dropped=frozenset(FIRST_PURCHASE_FEATURES))
    plain = evaluate_one_time(without, AS_OF, H, seed=0).set_index("model")
    assert one_time.loc["model", "churn_auc"] > plain.loc["model", "churn_auc"] + 0.05
