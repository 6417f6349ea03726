"""MLflow registry: log a bundle as one pyfunc model version, the challenger/champion gate, manual promotion.

Aliases, not stages: every training run registers a new version with alias ``challenger``; it becomes
``champion`` when it beats the current champion on *both* primary metrics (churn AUC and value normalized
Gini) on the challenger's validation cutoff, or when there is no champion yet, or when forced. Serving and
batch jobs load ``models:/NAME@champion``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.loader import BUNDLE_ARTIFACT, ModelNotFound, load_model
from serving.model import ScoringModel
from training.evaluate import churn_metrics, value_metrics

CHAMPION = "champion"
CHALLENGER = "challenger"
PRIMARY_METRICS = ("churn_auc", "value_normalized_gini")


def log_bundle(model: ScoringModel, model_name: str, input_example: pd.DataFrame) -> str:
    """Log the bundle as a pyfunc model in the active run and register it; returns the new version."""
    import mlflow
    from mlflow.models import infer_signature

    from serving.pyfunc import MODEL_CODE, RetentionPyfunc

    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = model.save(Path(tmp) / BUNDLE_ARTIFACT)
        example = input_example[list(model.feature_columns)].head(5).astype("float64")
        output = RetentionPyfunc()
        output.model = model
        signature = infer_signature(example, output.predict(None, example))
        import lightgbm

        requirements = [f"mlflow=={mlflow.__version__}", f"lightgbm=={lightgbm.__version__}", "numpy", "pandas"]
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=MODEL_CODE,  # models from code: nothing is pickled, the boosters stay native text
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            signature=signature,
            input_example=example,
            registered_model_name=model_name,
            pip_requirements=requirements,  # stated, not inferred: inference re-imports the model (seconds)
        )
    return str(info.registered_model_version)


@dataclasses.dataclass
class GateDecision:
    promoted: bool
    reason: str
    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def champion_version(model_name: str) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def score_primary(model: ScoringModel, features: pd.DataFrame, churned: np.ndarray, future_value: np.ndarray):
    """A model's primary metrics on labelled feature rows (rank metrics: unaffected by margin or discount)."""
    scores = model.score(features[list(model.feature_columns)].to_numpy(dtype=np.float64))
    return {
        "churn_auc": churn_metrics(churned, scores.churn_probability)["auc"],
        "value_normalized_gini": value_metrics(future_value, scores.expected_value)["normalized_gini"],
    }


def gate(
    model_name: str,
    challenger_metrics: dict[str, float] | None,
    validation_features: pd.DataFrame,
    churned: np.ndarray,
    future_value: np.ndarray,
    *,
    force: bool = False,
) -> GateDecision:
    """Decide whether the challenger replaces the champion (on the challenger's validation rows).

    A challenger without validation metrics (a BTYD-only version: nothing could be labeled) cannot be compared:
    it becomes champion only when there is none yet or when forced, and otherwise waits for ``retention promote``.
    """
    current = champion_version(model_name)
    if challenger_metrics is None:
        if current is None or force:
            return GateDecision(True, "no champion yet" if current is None else "forced", {}, None, current)
        reason = f"not validated (no labeled window), so it cannot be compared with champion v{current}"
        return GateDecision(False, reason, {}, None, current)
    mine = {k: float(challenger_metrics[k]) for k in PRIMARY_METRICS}
    if current is None:
        return GateDecision(True, "no champion yet", mine, None, None)
    try:
        champ = load_model(f"models:/{model_name}@{CHAMPION}")
        theirs = score_primary(champ, validation_features, churned, future_value)
    except (ModelNotFound, KeyError, ValueError) as exc:
        return GateDecision(True, f"champion v{current} cannot score these rows ({exc})", mine, None, current)
    if force:
        return GateDecision(True, "forced", mine, theirs, current)
    better = all(mine[k] > theirs[k] for k in PRIMARY_METRICS)
    verdict = "beats" if better else "does not beat"
    detail = ", ".join(f"{k} {mine[k]:.4f} vs {theirs[k]:.4f}" for k in PRIMARY_METRICS)
    return GateDecision(better, f"challenger {verdict} champion v{current} ({detail})", mine, theirs, current)


def set_alias(model_name: str, alias: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_registered_model_alias(model_name, alias, str(version))


def promote(model_name: str, version: str) -> str | None:
    """Move ``champion`` to ``version`` by hand; returns the previous champion version."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    previous = champion_version(model_name)
    try:
        MlflowClient().get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise ModelNotFound(f"model '{model_name}' has no version {version}") from exc
    set_alias(model_name, CHAMPION, version)
    return previous
