"""MLflow registry: log a bundle as one pyfunc model version, the challenger/champion gate, manual promotion.

Aliases, not stages: every training run registers a new version with alias ``challenger``; it becomes
``champion`` when it beats the current champion on *both* primary metrics (churn AUC and value normalized
Gini), or when there is no champion yet, or when forced. Serving and batch jobs load ``models:/NAME@champion``.

Like with like: the challenger's metrics are those of its *selection* models on its validation cutoff V (trained
only on cutoffs whose labels were known at V); the registered version is the final refit, which trained on V
too. So the champion's registered model scored on the challenger's V rows would be favoured whenever it trained
on V. When the champion's own training run validated on the same cutoff, horizon and scheme, the gate compares
the two runs' recorded validation metrics (selection model vs selection model, neither trained on V); otherwise
it scores the champion on the challenger's V rows and says in ``promotion.json`` (``comparison``) whether the
champion had trained on them.

Uplift heads (a version trained with a campaign log) have their own gate, applied at training time on held-out
campaign customers (:mod:`training.uplift`): they are ``trusted`` -- and only then score ``uplift`` -- when their Qini
coefficient beats both churn-risk targeting and random targeting (its 95% quantile). The verdict travels in the
bundle (``BundleMeta.uplift``) and is recorded beside the promotion decision (:func:`uplift_verdict`); it does not
decide the champion, which is chosen on the churn and value heads as above.
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
from training.metrics import churn_metrics, value_metrics

RECORDED_PREFIX = "model"
"""The prefix of the product's validation metrics in a training run (``model_churn_auc``; ``pipeline.PRODUCT``)."""
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
        output = RetentionPyfunc()  # as load_context would set it up, on the bundle in memory
        output.model = model
        output.economics = None  # the default economics (serving.economics): the signature is the columns only
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
    comparison: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What was compared: ``method`` (``recorded_validation`` or ``champion_scored_on_challenger_rows``), the
    cutoff and horizon, and for the second method whether the champion had trained on those rows."""
    uplift: dict[str, Any] | None = None
    """The challenger's uplift gate (:func:`uplift_verdict`); None for a version without uplift heads."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def champion_version(model_name: str) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def champion_record(model_name: str, version: str) -> dict[str, Any] | None:
    """The champion's training run: its validation params and recorded product metrics (None when unknown)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        run = client.get_run(client.get_model_version(model_name, str(version)).run_id)
    except (MlflowException, TypeError):
        return None
    metrics = {k: run.data.metrics.get(f"{RECORDED_PREFIX}_{k}") for k in PRIMARY_METRICS}
    return {"run_id": run.info.run_id, "params": dict(run.data.params), "metrics": metrics}


def _trained_through(params: dict[str, str]) -> str | None:
    """The last day whose outcome a run's final refit saw (latest training cutoff + horizon), ISO date or None."""
    import datetime as dt

    try:
        last = max(dt.date.fromisoformat(c) for c in params["cutoffs"].split(",") if c)
        return str(last + dt.timedelta(days=int(params["horizon_days"])))
    except (KeyError, ValueError):
        return None


VALIDATION_KEYS = ("validation_cutoff", "horizon_days", "validation_scheme")


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
    validation: dict[str, Any] | None = None,
    uplift_trusted: bool = False,
) -> GateDecision:
    """Decide whether the challenger replaces the champion, comparing like with like (see the module docstring).

    ``uplift_trusted``: the challenger holds trusted uplift heads (:func:`uplift_verdict`). A challenger that ties
    the champion on every primary metric (none worse) and brings trusted uplift heads the champion lacks is promoted:
    retraining the same data with a campaign log must reach the plans that use it.

    ``validation``: the challenger's ``validation_cutoff``, ``horizon_days`` and ``validation_scheme``; when the
    champion's training run recorded its validation metrics on the same three, those are compared, else the
    champion is scored on ``validation_features`` (flagged when it trained on them).

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
        return GateDecision(True, "no champion yet", mine, None, None, {"method": "none", "note": "no champion"})
    record = champion_record(model_name, current)
    mine_v = {k: str(v) for k, v in (validation or {}).items() if k in VALIDATION_KEYS}
    theirs_v = {k: (record or {}).get("params", {}).get(k) for k in VALIDATION_KEYS}
    recorded = (record or {}).get("metrics", {})
    if (
        len(mine_v) == len(VALIDATION_KEYS)
        and mine_v == theirs_v
        and all(recorded.get(k) is not None for k in PRIMARY_METRICS)
    ):
        theirs = {k: float(recorded[k]) for k in PRIMARY_METRICS}
        comparison: dict[str, Any] = {
            "method": "recorded_validation",
            **mine_v,
            "champion_run_id": record["run_id"],  # type: ignore[index]
            "note": (
                "both versions' selection models, each validated in its own training run on the same cutoff and"
                " horizon (neither trained on it); the final refits are not compared"
            ),
        }
    else:
        try:
            champ = load_model(f"models:/{model_name}@{CHAMPION}")
            theirs = score_primary(champ, validation_features, churned, future_value)
        except (ModelNotFound, KeyError, ValueError) as exc:
            return GateDecision(True, f"champion v{current} cannot score these rows ({exc})", mine, None, current)
        through = _trained_through((record or {}).get("params", {}))
        cutoff = mine_v.get("validation_cutoff")
        favoured = through is None or cutoff is None or through > cutoff
        comparison = {
            "method": "champion_scored_on_challenger_rows",
            **mine_v,
            "champion_validation": {k: v for k, v in theirs_v.items() if v is not None},
            "champion_trained_through": through,
            "champion_trained_on_these_rows": favoured,
            "note": (
                "champion favoured: it trained on these rows (or their outcome window)"
                if favoured
                else "the champion's training outcomes ended by the challenger's validation cutoff"
            ),
        }
    if force:
        return GateDecision(True, "forced", mine, theirs, current, comparison)
    better = all(mine[k] > theirs[k] for k in PRIMARY_METRICS)
    champion_uplift = (record or {}).get("params", {}).get("uplift_trusted") == "True"
    adds_uplift = uplift_trusted and not champion_uplift and all(mine[k] >= theirs[k] for k in PRIMARY_METRICS)
    verdict = "beats" if better else "ties and adds trusted uplift heads to" if adds_uplift else "does not beat"
    detail = ", ".join(f"{k} {mine[k]:.4f} vs {theirs[k]:.4f}" for k in PRIMARY_METRICS)
    how = "recorded validation metrics" if comparison["method"] == "recorded_validation" else "scored on these rows"
    reason = f"challenger {verdict} champion v{current} ({detail}; {how})"
    return GateDecision(better or adds_uplift, reason, mine, theirs, current, comparison)


UPLIFT_GATE_METRICS = ("uplift_qini_model", "uplift_qini_risk", "uplift_qini_random", "uplift_qini_random_p95")


def uplift_verdict(
    uplift: dict[str, Any] | None, champion_params: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The uplift heads' gate from a bundle's ``BundleMeta.uplift``: ``trusted``, the rule and the held-out Qini
    coefficients it compared, and ``champion_learner``: the uplift learner of the champion's training run
    (``champion_params``, its MLflow params; None when it had no uplift heads).

    A version without uplift heads gets None, unless the champion has some: then ``trusted`` is False and ``note``
    says that promoting it drops the uplift scores (a training run without the campaign log)."""
    theirs = (champion_params or {}).get("uplift_learner")
    if uplift is None:
        if theirs is None:
            return None
        note = (
            f"this version has no uplift heads but the champion's have ({theirs}): promoting it drops the uplift"
            " scores (plans fall back to the assumed save rate); train with the campaign log to keep them"
        )
        return {
            "trusted": False,
            "rule": None,
            **dict.fromkeys(UPLIFT_GATE_METRICS),
            "champion_learner": theirs,
            "note": note,
        }
    metrics = uplift.get("metrics", {})
    return {
        "trusted": bool(uplift["trusted"]),
        "rule": uplift.get("gate"),
        **{k: metrics.get(k) for k in UPLIFT_GATE_METRICS},
        "champion_learner": theirs,
    }


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
