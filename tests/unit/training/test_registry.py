"""training.registry: the champion gate's decision on a local MLflow store (SQLite in tmp_path, no server) --
no champion yet, like-for-like recorded metrics (both metrics must be strictly better), a challenger without
validation metrics that cannot be compared, ``force``, and manual promotion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from model_util import COLUMNS, make_model

from serving.loader import ModelNotFound
from training import registry

NAME = "gate-unit"
VALIDATION = {"validation_cutoff": "2024-07-02", "horizon_days": "90", "validation_scheme": "temporal"}
RECORDED = {"churn_auc": 0.80, "value_normalized_gini": 0.60}


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts under tmp_path
    return uri


def register(params: dict, metrics: dict) -> str:
    import mlflow

    mlflow.set_experiment("gate-unit")
    with mlflow.start_run():
        mlflow.log_params(params)
        mlflow.log_metrics({f"{registry.RECORDED_PREFIX}_{k}": v for k, v in metrics.items()})
        return registry.log_bundle(make_model(), NAME, pd.DataFrame(1.0, index=range(5), columns=list(COLUMNS)))


def rows() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    frame = pd.DataFrame(np.random.default_rng(1).uniform(0, 100, size=(60, len(COLUMNS))), columns=list(COLUMNS))
    return frame, (frame["recency_days"] > 50).to_numpy(int), frame["spend_365d"].to_numpy()


def decide(challenger: dict | None, **kwargs) -> registry.GateDecision:
    return registry.gate(NAME, challenger, *rows(), validation=VALIDATION, **kwargs)


def test_the_gate_decisions(tracking) -> None:
    first = decide(RECORDED)
    assert first.promoted and first.reason == "no champion yet" and first.champion_version is None
    assert decide(None).promoted  # nothing to compare with: an unvalidated first version becomes champion

    version = register({**VALIDATION, "cutoffs": "2024-06-02,2024-07-02"}, RECORDED)
    registry.set_alias(NAME, registry.CHAMPION, version)
    assert registry.champion_version(NAME) == version

    # like with like: the champion's recorded validation metrics on the same cutoff, horizon and scheme
    better = decide({"churn_auc": 0.81, "value_normalized_gini": 0.61})
    assert better.promoted and better.champion == RECORDED
    assert better.comparison["method"] == "recorded_validation" and better.comparison["champion_run_id"]
    assert better.reason.startswith(f"challenger beats champion v{version} (churn_auc 0.8100 vs 0.8000")
    tie = decide({"churn_auc": 0.80, "value_normalized_gini": 0.70})  # equal is not better
    assert not tie.promoted and "does not beat" in tie.reason
    # ... unless the challenger ties and brings trusted uplift heads the champion lacks (a retrain with campaigns)
    adds = decide({"churn_auc": 0.80, "value_normalized_gini": 0.70}, uplift_trusted=True)
    assert adds.promoted and "ties and adds trusted uplift heads to champion" in adds.reason
    assert not decide({"churn_auc": 0.79, "value_normalized_gini": 0.70}, uplift_trusted=True).promoted  # worse

    # a challenger without validation metrics cannot be compared: it waits, unless forced
    waiting = decide(None)
    assert not waiting.promoted and waiting.champion is None
    assert waiting.reason == f"not validated (no labeled window), so it cannot be compared with champion v{version}"
    forced = decide(None, force=True)
    assert forced.promoted and forced.reason == "forced" and forced.champion_version == version

    worse = decide({"churn_auc": 0.10, "value_normalized_gini": 0.10}, force=True)
    assert worse.promoted and worse.reason == "forced" and worse.champion == RECORDED  # compared all the same

    # a champion that has trusted uplift heads keeps them against a tie
    with_uplift = register({**VALIDATION, "cutoffs": "2024-06-02", "uplift_trusted": "True"}, RECORDED)
    registry.set_alias(NAME, registry.CHAMPION, with_uplift)
    assert not decide(RECORDED, uplift_trusted=True).promoted
    registry.set_alias(NAME, registry.CHAMPION, version)

    # manual promotion returns the previous champion; an unknown version is refused
    second = register({**VALIDATION, "cutoffs": "2024-06-02,2024-07-02"}, RECORDED)
    assert registry.promote(NAME, second) == version and registry.champion_version(NAME) == second
    with pytest.raises(ModelNotFound, match="has no version 99"):
        registry.promote(NAME, "99")


def test_trained_through_is_the_last_cutoff_plus_the_horizon() -> None:
    assert registry._trained_through({"cutoffs": "2024-06-02,2024-10-01,", "horizon_days": "90"}) == "2024-12-30"
    assert registry._trained_through({"horizon_days": "90"}) is None
