"""The training pipeline on generated data: temporal honesty, both heads, baselines, bundle round trip."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from features.contract import prepare_transactions
from features.kernel import compute_features, date_to_day, index_transactions
from features.synthetic import generate_transactions
from serving.model import CHURN_FILE, VALUE_FILE, ScoringModel
from training.dataset import plan_training
from training.pipeline import fit_pipeline

AS_OF = dt.date(2024, 12, 30)
HORIZON = 90


@pytest.fixture(scope="module")
def prep():
    raw = generate_transactions(2000, 730, seed=3)
    tx, _ = prepare_transactions(raw, as_of=AS_OF)
    return index_transactions(tx)


@pytest.fixture(scope="module")
def result(prep):
    return fit_pipeline(prep, AS_OF, HORIZON, seed=0)


def test_validation_is_temporal_and_never_sees_its_labels(prep) -> None:
    plan = plan_training(prep, AS_OF, HORIZON)
    assert plan.validation_cutoff == AS_OF - dt.timedelta(days=HORIZON)
    assert plan.selection_cutoffs, "at least one cutoff trains the selection model"
    # every selection cutoff's label window closes on or before the validation cutoff
    assert all(date_to_day(c) + HORIZON <= date_to_day(plan.validation_cutoff) for c in plan.selection_cutoffs)
    # no label window of the plan passes the as-of date
    assert all(date_to_day(c) + HORIZON <= date_to_day(AS_OF) for c in plan.cutoffs)


def test_the_model_beats_naive_baseline_and_matches_btyd(result) -> None:
    lgb, naive, btyd = result.metrics["model"], result.metrics["naive"], result.metrics["btyd"]
    assert lgb["churn_auc"] > naive["churn_auc"]
    assert lgb["value_normalized_gini"] > naive["value_normalized_gini"]
    assert lgb["churn_auc"] > btyd["churn_auc"] - 0.005
    assert lgb["value_normalized_gini"] > btyd["value_normalized_gini"] - 0.01
    assert lgb["churn_ece"] < 0.05, "calibrated probabilities mean what they say"


def test_outputs_are_probabilities_and_non_negative_values(result, prep) -> None:
    population = compute_features(prep, AS_OF)
    scores = result.model.score(population[list(result.model.feature_columns)].to_numpy())
    assert np.all((scores.churn_probability >= 0) & (scores.churn_probability <= 1))
    assert np.all(scores.expected_value >= 0)
    np.testing.assert_allclose(scores.value_at_risk, scores.churn_probability * scores.expected_value)


def test_tiers_follow_the_pyramid_shares(result, prep) -> None:
    from serving.scoring import assign_tiers

    population = compute_features(prep, AS_OF)
    expected = result.model.score(population[list(result.model.feature_columns)].to_numpy()).expected_value
    tiers = assign_tiers(expected, result.model.meta)
    shares = {t: float(np.mean(tiers == t)) for t in result.model.meta.tier_names}
    assert shares["platinum"] == pytest.approx(0.05, abs=0.01)
    assert shares["gold"] == pytest.approx(0.15, abs=0.02)
    assert shares["silver"] == pytest.approx(0.30, abs=0.02)


def test_bundle_round_trip_in_native_text_format(result, prep, tmp_path: Path) -> None:
    folder = result.model.save(tmp_path / "bundle")
    for file, kind in ((CHURN_FILE, result.model.meta.churn_head), (VALUE_FILE, result.model.meta.value_head)):
        assert (folder / file).exists() == (kind != "btyd")
        if kind != "btyd":
            assert (folder / file).read_text().startswith("tree")
    loaded = ScoringModel.load(folder)
    X = compute_features(prep, AS_OF)[list(loaded.feature_columns)].to_numpy()
    a, b = result.model.score(X), loaded.score(X)
    np.testing.assert_allclose(a.churn_probability, b.churn_probability)
    np.testing.assert_allclose(a.expected_value, b.expected_value)
    assert loaded.meta == result.model.meta


def test_margin_and_discount_scale_value(prep, result) -> None:
    import dataclasses

    meta = dataclasses.replace(result.model.meta, margin=0.3, discount_rate=0.1)
    profit_model = ScoringModel(result.model.churn_booster, result.model.value_booster, meta)
    X = compute_features(prep, AS_OF)[list(meta.feature_columns)].to_numpy()[:50]
    revenue = result.model.score(X).expected_value
    profit = profit_model.score(X).expected_value
    np.testing.assert_allclose(profit, revenue * 0.3 * 1.1 ** (-(HORIZON / 365) / 2))


def test_same_data_and_seed_give_same_metrics(prep, result) -> None:
    again = fit_pipeline(prep, AS_OF, HORIZON, seed=0)
    assert again.metrics == result.metrics
