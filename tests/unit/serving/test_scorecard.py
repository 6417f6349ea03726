"""serving.scorecard: percentile maps against the training reference, loyalty, the composite and its tiers on hand
fixtures; monotonicity as Hypothesis properties; the reference in bundle.json and the scores from the one scorer."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_util import make_model

from features.contract import ContractError
from serving.model import BundleMeta
from serving.scorecard import (
    SCORECARD_FIELDS,
    ScorecardReference,
    ScorecardWeights,
    composite_score,
    contribution_value,
    fit_reference,
    loyalty_score,
    percentile_score,
    reference_quantiles,
    score_scorecard,
    scorecard_tiers,
)
from serving.scoring import json_rows, output_columns, reason_objects, score_customers

UNIFORM = tuple(float(v) for v in range(101))  # quantiles of 0..100: a value's percentile is the value itself


def test_percentile_map_is_linear_between_quantiles_and_mid_tie_at_a_repeated_one() -> None:
    # quantiles at 0%, 25%, 50%, 75%, 100%: 0 repeats over 0-50% -> 25; 5 lies halfway from 50% (0) to 75% (10)
    q = (0.0, 0.0, 0.0, 10.0, 20.0)
    got = percentile_score(np.array([-1.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0, np.nan]), q)
    np.testing.assert_array_equal(got, [0.0, 25.0, 62.5, 75.0, 87.5, 100.0, 100.0, np.nan])
    np.testing.assert_array_equal(percentile_score(np.array([3.5, 42.0]), UNIFORM), [3.5, 42.0])
    assert np.isnan(percentile_score(np.array([1.0]), ())).all()  # no reference: no score


def test_reference_quantiles_skip_missing_values() -> None:
    assert reference_quantiles(np.array([np.nan, *range(101)])) == pytest.approx(UNIFORM, abs=1e-12)
    assert reference_quantiles(np.array([np.nan])) == ()


def test_contribution_is_spend_after_margin_missing_as_zero() -> None:
    X = np.array([[100.0, 1.0], [np.nan, 2.0]])
    np.testing.assert_array_equal(contribution_value(X, ("spend_365d", "other"), 0.4), [40.0, 0.0])
    assert np.isnan(contribution_value(X, ("a", "b"), 0.4)).all()


LOYALTY_COLUMNS = ("tenure_days", "btyd_frequency", "complaints_30d", "unresolved_complaints", "mean_rating")
REFERENCE = ScorecardReference(
    contribution=UNIFORM,
    potential=UNIFORM,
    tenure=UNIFORM,
    repurchase=UNIFORM,
    rating=tuple(np.linspace(1.0, 5.0, 101).tolist()),
    tier_names=("gold", "silver", "bronze"),
    tier_bounds=(80.0, 50.0, 0.0),
)


def test_loyalty_weighs_retention_tenure_repurchase_and_service() -> None:
    churn = np.array([0.2, 0.2, 0.2])
    X = np.array(
        [
            [50.0, 30.0, 1.0, 1.0, 3.0],  # service: complaints 1 / (1 + 1 + 1), satisfaction 50% -> 5/12
            [50.0, 30.0, np.nan, np.nan, np.nan],  # no event: no complaint counted, never rated -> service 1
            [np.nan, 30.0, 0.0, 0.0, np.nan],  # tenure missing: left out, weights renormalised
        ]
    )
    got = loyalty_score(churn, X, LOYALTY_COLUMNS, REFERENCE)
    assert got[0] == pytest.approx(100 * (0.5 * 0.8 + 0.2 * 0.5 + 0.15 * 0.3 + 0.15 * 5 / 12), abs=1e-9)  # 60.75
    assert got[1] == pytest.approx(100 * (0.5 * 0.8 + 0.2 * 0.5 + 0.15 * 0.3 + 0.15 * 1.0), abs=1e-9)
    assert got[2] == pytest.approx(100 * (0.5 * 0.8 + 0.15 * 0.3 + 0.15 * 1.0) / 0.8, abs=1e-9)
    # a model without tenure, repurchase or event features: retention alone
    np.testing.assert_allclose(loyalty_score(churn, np.empty((3, 0)), (), REFERENCE), [80.0, 80.0, 80.0])


def test_composite_is_the_weighted_mean_and_tiers_follow_its_bounds() -> None:
    c, lo, p = np.array([30.0, 90.0, np.nan]), np.array([60.0, 80.0, 50.0]), np.array([90.0, 70.0, 50.0])
    np.testing.assert_allclose(composite_score(c, lo, p), [60.0, 80.0, np.nan])
    weights = ScorecardWeights.parse("contribution=2, loyalty=1, potential=1")
    np.testing.assert_allclose(composite_score(c, lo, p, weights), [52.5, 82.5, np.nan])
    tiers = scorecard_tiers(np.array([90.0, 80.0, 79.9, 0.0, np.nan]), REFERENCE)
    assert tiers.tolist() == ["gold", "gold", "silver", "bronze", None]
    assert scorecard_tiers(np.array([90.0]), dataclasses.replace(REFERENCE, tier_bounds=())) is None


def test_weights_parse_text_json_and_refuse_nonsense() -> None:
    assert ScorecardWeights.parse('{"loyalty": 1}').shares() == (0.0, 1.0, 0.0)
    assert ScorecardWeights().shares() == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    for bad in ("loyalty=-1", "value=1", "loyalty=x", "contribution=0,loyalty=0,potential=0", "", "{"):
        with pytest.raises(ContractError):
            ScorecardWeights.parse(bad)


def test_the_process_weights_come_from_the_settings() -> None:
    from retention.settings import Settings
    from serving.scorecard import weights_of_settings

    assert weights_of_settings(Settings()) is None
    assert weights_of_settings(Settings(scorecard_weights="loyalty=3,potential=1")).shares() == (0.0, 0.75, 0.25)
    with pytest.raises(ContractError):
        weights_of_settings(Settings(scorecard_weights="loyalty=-1"))


def test_the_reference_is_plain_json_in_the_bundle_and_fitted_on_the_population() -> None:
    raw = json.loads(json.dumps(REFERENCE.to_dict()))
    assert ScorecardReference.from_dict(raw) == REFERENCE
    meta = dataclasses.replace(make_model().meta, scorecard=REFERENCE.to_dict())
    assert BundleMeta.from_json(meta.to_json()).scorecard == meta.scorecard
    # population: spend 0..3 (margin 0.5), expected value 0..3, churn 0.5: the median composite splits gold/bronze
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    fitted = fit_reference(X, ("spend_365d",), np.full(4, 0.5), X[:, 0], 0.5, ("gold", "bronze"), (0.5,))
    assert fitted.contribution[0] == 0.0 and fitted.contribution[-1] == 1.5 and fitted.tenure == ()
    composite = score_scorecard(fitted, X, ("spend_365d",), np.full(4, 0.5), X[:, 0], 0.5)["composite_score"]
    # contribution = potential = 100 i / 3, loyalty = 100 x (1 - 0.5): composite (200 i / 3 + 50) / 3
    np.testing.assert_allclose(composite, [(200 * i / 3 + 50) / 3 for i in range(4)])
    assert fitted.tier_bounds == (float(np.median(composite)), 0.0)
    tiers = score_scorecard(fitted, X, ("spend_365d",), np.full(4, 0.5), X[:, 0], 0.5)["scorecard_tier"]
    assert tiers.tolist() == ["bronze", "bronze", "gold", "gold"]


def test_the_one_scorer_serves_the_scorecard_and_older_bundles_score_none() -> None:
    model = make_model("s")
    X = np.array([[10.0, 500.0, 3.0], [90.0, 5.0, 1.0], [50.0, np.nan, 2.0]])
    old = score_customers(model, ["a", "b", "c"], X, reasons=0)
    assert all(getattr(old, f) is None for f in SCORECARD_FIELDS) and old.scorecard_tier is None
    assert output_columns(old)["composite_score"].isna().all() and json_rows(old)[0]["scorecard_tier"] is None
    model.meta = dataclasses.replace(model.meta, scorecard=REFERENCE.to_dict())
    batch = score_customers(model, ["a", "b", "c"], X, reasons=0)
    scores = model.score(X)
    expected = score_scorecard(
        REFERENCE, X, model.feature_columns, scores.churn_probability, scores.expected_value, model.meta.margin
    )
    for field in (*SCORECARD_FIELDS, "scorecard_tier"):
        np.testing.assert_array_equal(getattr(batch, field), expected[field])
    assert batch.contribution_score.tolist() == [100.0, 5.0, 0.0]  # spend x margin 1 against 0..100
    row = json_rows(batch)[1]
    assert row["contribution_score"] == 5.0 and row["scorecard_tier"] == expected["scorecard_tier"][1]
    weighted = score_customers(model, ["a"], X[:1], reasons=0, scorecard_weights=ScorecardWeights(1.0, 0.0, 0.0))
    assert weighted.composite_score.tolist() == [100.0]
    assert output_columns(batch)["scorecard_tier"].tolist() == expected["scorecard_tier"].tolist()


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    quantiles=st.lists(finite, min_size=1, max_size=30).map(sorted),
    spend=st.lists(finite, min_size=2, max_size=20),
    margin=st.floats(min_value=0.01, max_value=1.0),
)
def test_more_spend_never_lowers_contribution(quantiles: list[float], spend: list[float], margin: float) -> None:
    x = np.sort(np.asarray(spend))
    score = percentile_score(contribution_value(x[:, None], ("spend_365d",), margin), quantiles)
    assert np.all(np.diff(score) >= 0) and np.all((score >= 0) & (score <= 100))


@settings(max_examples=60, deadline=None)
@given(
    churn=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=10),
    row=st.tuples(
        st.floats(min_value=0, max_value=200) | st.just(math.nan),
        st.floats(min_value=0, max_value=200),
        st.floats(min_value=0, max_value=5) | st.just(math.nan),
        st.floats(min_value=0, max_value=5),
        st.floats(min_value=1, max_value=5) | st.just(math.nan),
    ),
)
def test_higher_churn_probability_never_raises_loyalty(churn: list[float], row: tuple[float, ...]) -> None:
    p = np.sort(np.asarray(churn))
    X = np.tile(np.asarray(row, dtype=np.float64), (len(p), 1))
    loyalty = loyalty_score(p, X, LOYALTY_COLUMNS, REFERENCE)
    assert np.all(np.diff(loyalty) <= 1e-9) and np.all((loyalty >= 0) & (loyalty <= 100 + 1e-9))


def test_the_batch_partitions_score_under_the_run_s_weights() -> None:
    import datetime as dt

    import pandas as pd

    from serving.batch import score_partition

    model = make_model("w")
    model.meta = dataclasses.replace(model.meta, scorecard=REFERENCE.to_dict())
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b"],
            "timestamp": ["2024-11-01", "2024-12-01", "2024-06-01"],
            "amount": [30.0, 12.5, 80.0],
        }
    )
    as_of = dt.date(2024, 12, 30)
    plain = score_partition(raw, model, as_of).scores
    contribution_only = score_partition(raw, model, as_of, scorecard_weights=ScorecardWeights(1.0, 0.0, 0.0)).scores
    assert plain["contribution_score"].tolist() == [42.5, 80.0]  # spend_365d x margin 1 against 0..100
    assert contribution_only["composite_score"].tolist() == [42.5, 80.0]
    expected = (plain["contribution_score"] + plain["loyalty_score"] + plain["potential_score"]) / 3
    np.testing.assert_allclose(plain["composite_score"], expected)
    assert plain["churn_cause"].notna().any() and plain["scorecard_tier"].notna().all()


def test_a_model_trained_with_events_scores_the_scorecard_on_its_training_shares() -> None:
    """Behaviour on generated data with customer events (complaints and low ratings make customers leave): the
    bundle's reference holds the ratings; at the training as-of date the composite's tiers hold the training tiers'
    shares; customers with unresolved complaints are less loyal; an event feature's reasons name the service family."""
    import datetime as dt

    from features.contract import prepare_transactions
    from features.kernel import compute_feature_arrays, index_transactions
    from features.synthetic import generate_transactions
    from features.synthetic_events import generate_events
    from serving.causes import EVENT_FEATURE_FAMILY
    from serving.scoring import feature_matrix
    from training.pipeline import fit_pipeline

    as_of = dt.date(2024, 12, 30)
    transactions, events = generate_events(generate_transactions(1500, 730, seed=1), seed=1)
    clean, _ = prepare_transactions(transactions, as_of=as_of)
    prep = index_transactions(clean, events=events)
    model = fit_pipeline(prep, as_of, 90, seed=0, num_threads=1).model
    reference = ScorecardReference.from_dict(json.loads(model.meta.to_json())["scorecard"])
    assert len(reference.rating) == len(reference.contribution) == 101
    ids, arrays = compute_feature_arrays(prep, as_of)
    X = feature_matrix(arrays, model.feature_columns, len(ids))
    batch = score_customers(model, ids, X)
    counts = {t: int((batch.scorecard_tier == t).sum()) for t in model.meta.tier_names}
    assert counts == {t: int((batch.tier == t).sum()) for t in model.meta.tier_names}  # 5%, 15%, 30%, the rest
    complained = np.nan_to_num(arrays["unresolved_complaints"]) > 0
    assert 0 < complained.sum() < len(ids)
    assert batch.loyalty_score[complained].mean() < batch.loyalty_score[~complained].mean() - 5
    event_reasons = [
        r for i in range(len(batch)) for r in reason_objects(batch, i) if r["feature"] in EVENT_FEATURE_FAMILY
    ]
    assert event_reasons and all(r["cause"] == EVENT_FEATURE_FAMILY[r["feature"]] for r in event_reasons)
    assert "service" in {r["cause"] for r in event_reasons}
