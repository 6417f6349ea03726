"""training.baselines on tiny frames: the naive rules by hand, and BTYD's predictions with no-purchase customers
set to churn 1 and value 0."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.btyd import BGNBDParams, BTYDModel, GammaGammaParams
from training import baselines


def test_unfitted_naive_churn_is_recency_over_recency_plus_30() -> None:
    frame = pd.DataFrame({"recency_days": [0.0, 30.0, 90.0, np.nan]})
    churn = baselines.naive_churn(None, frame)
    # a customer without a purchase (NaN recency) counts as 1e6 days: 1e6 / (1e6 + 30)
    assert churn.tolist() == [0.0, 0.5, 0.75, 1e6 / (1e6 + 30)]


def test_fitted_naive_churn_is_isotonic_in_recency() -> None:
    train = pd.DataFrame({"recency_days": [1.0, 2.0, 3.0, 4.0], "churned": [0, 1, 0, 1]})
    # pool adjacent violators: (2: 1, 3: 0) pools to 0.5; clipped outside the training recencies
    frame = pd.DataFrame({"recency_days": [0.0, 1.0, 2.5, 4.0, 10.0]})
    assert baselines.naive_churn(train, frame).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_naive_value_scales_last_year_s_net_spend_to_the_horizon() -> None:
    frame = pd.DataFrame({"spend_365d": [365.0, -10.0, 73.0]})
    assert baselines.naive_value(frame, 90).tolist() == [90.0, 0.0, 18.0]


def test_btyd_predict_gives_no_purchase_customers_churn_1_and_value_0() -> None:
    model = BTYDModel(BGNBDParams(r=0.5, alpha=20.0, a=0.8, b=2.5), GammaGammaParams(p=6.0, q=4.0, v=15.0))
    frame = pd.DataFrame(
        {
            "btyd_frequency": [2.0, 0.0, 0.0],
            "btyd_recency": [100.0, 0.0, 0.0],
            "btyd_T": [200.0, 50.0, 50.0],
            "btyd_monetary": [30.0, 0.0, 0.0],
            "n_purchase_days": [3.0, 1.0, 0.0],  # the third customer only has refunds
        }
    )
    churn, value = baselines.btyd_predict(model, frame, 90)
    direct = model.predict([2.0, 0.0], [100.0, 0.0], [200.0, 50.0], [30.0, 0.0], horizon_days=90)
    np.testing.assert_array_equal(churn[:2], direct["churn_probability"])
    np.testing.assert_array_equal(value[:2], direct["expected_value"])
    assert (churn[2], value[2]) == (1.0, 0.0)


def test_fit_btyd_reads_only_customers_with_a_purchase() -> None:
    rng = np.random.default_rng(4)
    n = 400
    buyers = pd.DataFrame(
        {
            "btyd_frequency": rng.integers(0, 6, n).astype(float),
            "btyd_T": rng.uniform(100, 300, n),
            "btyd_monetary": rng.uniform(5, 50, n),
            "n_purchase_days": 1.0,
        }
    )
    buyers["btyd_recency"] = np.where(buyers["btyd_frequency"] > 0, buyers["btyd_T"] * 0.6, 0.0)
    refunds_only = buyers.head(50).assign(n_purchase_days=0.0, btyd_frequency=40.0, btyd_monetary=1e4)
    with_noise = pd.concat([buyers, refunds_only], ignore_index=True)
    assert baselines.fit_btyd(with_noise).to_dict() == baselines.fit_btyd(buyers).to_dict()
