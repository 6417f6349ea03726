"""How the models do on one-time buyers: the product, BG/NBD + Gamma-Gamma and the population average side by side.

BG/NBD gives a customer with a single purchase day P(alive) = 1, and a model trained on everyone can rank one-time
buyers no better than chance while the all-customer metrics look fine. :func:`evaluate_one_time` runs the backtest
fold (:func:`training.jobs.evaluate_fold`: the product's model trained with data up to ``as_of`` only, scored on the
true next ``H`` days), whose rows include the ``population_average`` baseline
(:func:`training.baselines.population_average`: the group's mean churn and future value at ``as_of - H``), for the
customer groups of
:func:`training.baselines.customer_groups`. A model beats the population average on a group when it ranks there
(churn AUC above 0.5, value Spearman above 0) and its MAE is lower.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pandas as pd

from features.kernel import PreparedTransactions, compute_features
from features.labels import labels_at
from training import baselines
from training.config import TrainingConfig
from training.jobs import evaluate_fold, group_rows

ONE_TIME = "one_time"


def population_average_rows(prep: PreparedTransactions, as_of: dt.date, horizon_days: int) -> pd.DataFrame:
    """The ``population_average`` baseline's backtest rows at ``as_of`` (every customer with a transaction by then,
    scored on the next ``horizon_days``), per customer group; empty when nothing was labeled at ``as_of - H``."""
    test = compute_features(prep, as_of)
    _, labels = labels_at(prep, as_of, horizon_days)
    groups = baselines.customer_groups(test)
    rows = []
    for model, churn, value in baselines.population_average_scores(prep, as_of, horizon_days, test):
        rows += group_rows(as_of, model, labels["churned"], labels["future_value"], churn, value, groups)
    return pd.DataFrame(rows)


def evaluate_one_time(
    prep: PreparedTransactions,
    as_of: dt.date,
    horizon_days: int,
    seed: int | None = None,
    *,
    config: TrainingConfig | None = None,
    groups: Iterable[str] = (ONE_TIME,),
) -> pd.DataFrame:
    """Backtest rows of the product (``model``), ``btyd``, ``naive`` and ``population_average`` for ``groups``
    (default: one-time buyers only), trained at ``as_of`` and scored on the next ``horizon_days``.

    The product's rows carry its choices (heads, level source) as :func:`training.jobs.evaluate_fold` gives them.
    """
    table = evaluate_fold(prep, as_of, horizon_days, seed, config=config)
    wanted = list(groups)
    return table[table["group"].isin(wanted)].reset_index(drop=True)
