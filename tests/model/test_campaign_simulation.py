"""The simulated campaign on 20,000 generated customers behaves as designed: the randomized treated-minus-control
difference recovers each response type's designed effect within sampling error, the control arm is the untreated
world, the truth's potential outcomes are what the observed transactions give each arm, and the effects are strong
enough that a T-learner on the kernel's features finds the persuadables while targeting by churn risk does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.campaigns import campaign_outcomes, campaign_training_frame
from features.contract import prepare_transactions
from features.kernel import index_transactions
from features.synthetic import generate_transactions
from features.synthetic_campaigns import CampaignDesign, response_summary, simulate_campaign, true_incremental_profit

SENT_AT = "2024-09-01T10:00:00Z"
HORIZON = 90
DESIGN = CampaignDesign()
Z = 4.0  # differences within four standard errors


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return generate_transactions(20_000, 730, seed=0)


@pytest.fixture(scope="module")
def sim(raw: pd.DataFrame):
    return simulate_campaign(raw, SENT_AT, horizon_days=HORIZON, seed=0)


@pytest.fixture(scope="module")
def frame(sim):
    """Kernel features at the send day and observed outcomes, one row per campaign customer, with the truth."""
    prep = index_transactions(prepare_transactions(sim.transactions)[0])
    X, outcomes = campaign_training_frame(prep, sim.campaigns, HORIZON)
    assert outcomes["customer_id"].tolist() == sim.truth["customer_id"].tolist()  # everyone is known at the cutoff
    return X, outcomes.assign(response=sim.truth["response"].to_numpy())


def _difference(values: pd.Series, treated: pd.Series) -> tuple[float, float]:
    """Treated minus control mean and its standard error."""
    a, b = values[treated == 1], values[treated == 0]
    return a.mean() - b.mean(), float(np.sqrt(a.var() / len(a) + b.var() / len(b)))


def test_randomized_difference_recovers_the_designed_effect_per_type(sim, frame) -> None:
    X, outcomes = frame
    truth = sim.truth
    for response, group in outcomes.groupby("response"):
        control_retention = truth.loc[group.index, "retained_if_control"].mean()
        designed = {
            "persuadable": DESIGN.persuade_probability * (1 - control_retention),
            "sleeping_dog": -DESIGN.annoy_probability * control_retention,
        }.get(response, 0.0)
        effect, se = _difference(group["retained"], group["treatment"])
        assert abs(effect - designed) <= Z * se, (response, effect, designed, se)
        if response == "persuadable":  # p x (1 + Poisson mean) purchases of their average basket
            basket = X.loc[group.index, "mean_amount"].mean()
            spend, spend_se = _difference(group["net_spend"], group["treatment"])
            designed_spend = DESIGN.persuade_probability * (1 + DESIGN.extra_purchases_mean) * basket
            assert abs(spend - designed_spend) <= Z * spend_se, (spend, designed_spend, spend_se)
            assert effect > 0.3
        if response == "sleeping_dog":
            assert effect < -0.25
    summary = response_summary(truth)
    assert summary.loc["lost_cause", "retained_if_control"] < 0.01  # the highest risk: nearly all leave
    assert summary["share"].between(0.08, 0.45).all()


def test_the_control_arm_is_the_untreated_world(raw: pd.DataFrame, sim, frame) -> None:
    _, outcomes = frame
    control = set(sim.truth.loc[sim.truth["treated"] == 0, "customer_id"])
    key = ["customer_id", "timestamp", "transaction_id"]

    def rows(transactions: pd.DataFrame) -> pd.DataFrame:
        part = transactions[transactions["customer_id"].isin(control)]
        return part.sort_values(key, kind="stable").reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(sim.transactions), rows(raw))
    untreated = campaign_outcomes(index_transactions(prepare_transactions(raw)[0]), sim.campaigns, HORIZON)
    arm = outcomes["treatment"].to_numpy() == 0
    np.testing.assert_array_equal(outcomes.loc[arm, "retained"], untreated.loc[arm, "retained"])
    np.testing.assert_array_equal(outcomes.loc[arm, "net_spend"], untreated.loc[arm, "net_spend"])


def test_truth_matches_the_observed_transactions_in_each_arm(sim, frame) -> None:
    _, outcomes = frame
    truth = sim.truth
    for flag, arm in ((1, "treated"), (0, "control")):
        rows = outcomes["treatment"].to_numpy() == flag
        np.testing.assert_array_equal(outcomes.loc[rows, "retained"], truth.loc[rows, f"retained_if_{arm}"])
        np.testing.assert_allclose(
            outcomes.loc[rows, "net_spend"], truth.loc[rows, f"spend_if_{arm}"], rtol=0, atol=1e-9
        )


def test_a_t_learner_finds_the_persuadables_and_risk_targeting_does_not(sim, frame) -> None:
    import lightgbm as lgb

    X, outcomes = frame
    truth = sim.truth
    test = np.random.default_rng(1).random(len(X)) < 0.5
    y, treated = outcomes["retained"].to_numpy(), outcomes["treatment"].to_numpy() == 1
    params = dict(n_estimators=150, learning_rate=0.05, num_leaves=15, min_child_samples=40, n_jobs=1, verbose=-1)
    heads = [lgb.LGBMClassifier(**params).fit(X[~test & arm], y[~test & arm]) for arm in (treated, ~treated)]
    p_treated, p_control = (head.predict_proba(X[test])[:, 1] for head in heads)
    held_out = truth[test].reset_index(drop=True)
    k = len(held_out) // 5

    def top(score: np.ndarray) -> np.ndarray:
        return held_out["customer_id"].to_numpy()[np.argsort(-score, kind="stable")[:k]]

    by_uplift, by_risk = top(p_treated - p_control), top(1 - p_control)
    profit = {
        name: true_incremental_profit(held_out, ids, margin=0.3, cost_per_contact=2.0)
        for name, ids in (("uplift", by_uplift), ("risk", by_risk))
    }
    responses = held_out.set_index("customer_id")["response"]
    assert (responses[by_uplift] == "persuadable").mean() > 0.7
    assert (responses[by_risk] == "lost_cause").mean() > 0.5
    assert profit["uplift"] > 0 and profit["uplift"] >= 1.5 * max(profit["risk"], 0.0), profit
    predicted = pd.Series(p_treated - p_control).groupby(held_out["response"]).mean()
    assert predicted["sleeping_dog"] < -0.2 and predicted["persuadable"] > 0.3
