"""The training config: one frozen object, round-trips through dict/JSON/pickle, and its values reach the model."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest

from features.contract import ContractError, prepare_transactions
from features.kernel import compute_features, index_transactions
from features.synthetic import generate_transactions
from training.config import DEFAULT_CONFIG, TrainingConfig
from training.pipeline import fit_pipeline


def test_defaults_are_the_choices_models_were_trained_with() -> None:
    c = TrainingConfig()
    assert (c.horizon_days, c.min_history_days, c.cutoff_step_days, c.max_cutoffs) == (90, 30, 30, 12)
    assert c.tier_top_shares == (0.05, 0.20, 0.50) and c.tier_names == ("platinum", "gold", "silver", "bronze")
    assert c.churn_params["num_leaves"] == 15 and c.churn_params["max_depth"] == 5
    assert c.value_params["objective"] == "tweedie" and c.value_params["tweedie_variance_power"] == 1.3
    assert (c.max_rounds, c.early_stopping_rounds, c.level_backtest_cutoffs) == (2000, 50, 3)


def test_round_trips_through_dict_json_and_pickle() -> None:
    changed = DEFAULT_CONFIG.replace(
        tier_top_shares=(0.1, 0.3, 0.6), seed=7, churn_params={**DEFAULT_CONFIG.churn_params, "num_leaves": 7}
    )
    for config in (DEFAULT_CONFIG, changed):
        assert TrainingConfig.from_dict(config.to_dict()) == config
        assert TrainingConfig.from_dict(json.loads(config.to_json())) == config
        assert pickle.loads(pickle.dumps(config)) == config
    assert changed != DEFAULT_CONFIG and changed.churn_params["num_leaves"] == 7
    assert DEFAULT_CONFIG.churn_params["num_leaves"] == 15, "the defaults are not changed by a variant"


def test_read_back_from_a_file(tmp_path) -> None:
    path = tmp_path / "training_config.json"
    path.write_text(DEFAULT_CONFIG.replace(horizon_days=60).to_json())
    assert TrainingConfig.read(path).horizon_days == 60
    path.write_text('{"horizon": 60}')
    with pytest.raises(ContractError, match="unknown training config field"):
        TrainingConfig.read(path)


def test_it_is_frozen_including_the_parameter_maps() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_CONFIG.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEFAULT_CONFIG.churn_params["num_leaves"] = 255  # type: ignore[index]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tier_top_shares": (0.2, 0.1, 0.5)}, "increase strictly"),
        ({"tier_top_shares": (0.05, 0.2)}, "tier names need"),
        ({"margin": 0.0}, "--margin"),
        ({"horizon_days": 0}, "horizon"),
        ({"min_history_days": -1}, "--min-history-days"),
    ],
)
def test_impossible_values_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        DEFAULT_CONFIG.replace(**changes)


def test_flat_params_name_every_value() -> None:
    flat = DEFAULT_CONFIG.flat_params()
    assert flat["config.horizon_days"] == 90 and flat["config.tier_top_shares"] == "0.05,0.2,0.5"
    assert flat["config.churn_params.num_leaves"] == 15 and flat["config.search_space.num_leaves"] == "15,31,63"


def test_non_default_tier_shares_and_margin_reach_the_bundle() -> None:
    raw = generate_transactions(900, 540, seed=11)
    as_of = raw["timestamp"].max().date()
    tx, _ = prepare_transactions(raw, as_of=as_of)
    prep = index_transactions(tx)
    config = DEFAULT_CONFIG.replace(tier_top_shares=(0.10, 0.30, 0.60), margin=0.4, horizon_days=60, num_threads=1)
    result = fit_pipeline(prep, as_of, config=config)
    meta = result.model.meta
    assert result.config == config
    assert (meta.margin, meta.horizon_days) == (0.4, 60)
    population = compute_features(prep, meta.trained_as_of)
    expected = result.model.score(population[list(meta.feature_columns)].to_numpy()).expected_value
    from serving.scoring import assign_tiers

    tiers = assign_tiers(expected, meta)
    shares = [float(np.mean(tiers == t)) for t in meta.tier_names]
    assert shares == pytest.approx([0.10, 0.20, 0.30, 0.40], abs=0.02)
