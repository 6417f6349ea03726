"""Reliability of model loading (issue 14): a damaged or swapped bundle never reaches LightGBM's parser in a serving
process, a crash while parsing only kills a check process, a broken champion leaves the service up and saying why,
SIGHUP to the PID ``retention serve`` prints reloads without a restart, the pyfunc is logged from code (no pickle)
and the champion gate says what it compared. Small hand-made bundles: no trained workspace needed.
The real server's part is ``tests/integration/test_model_reload.py``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from model_util import COLUMNS, abort_lightgbm, make_model

from serving import loader
from serving.model import (
    BUNDLE_FILE,
    CHURN_FILE,
    MANIFEST_FILE,
    VALUE_FILE,
    BundleIntegrityError,
    ScoringModel,
    file_digest,
)


@pytest.fixture(scope="module")
def model() -> ScoringModel:
    return make_model()


@pytest.fixture
def bundle(model, tmp_path) -> Path:
    return model.save(tmp_path / "bundle")


@pytest.fixture
def no_parse(monkeypatch):
    """Fail the test if LightGBM is asked to parse a model file in this process."""

    def refuse(*args, **kwargs):
        raise AssertionError("LightGBM parsed a file that should have been refused first")

    monkeypatch.setattr(lgb, "Booster", refuse)


def test_save_writes_a_manifest_of_digests_and_roles(bundle, model) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {BUNDLE_FILE, CHURN_FILE, VALUE_FILE}
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": file_digest(bundle / name), "bytes": (bundle / name).stat().st_size}
    assert manifest["boosters"] == {
        "churn": {"file": CHURN_FILE, "objective": "binary", "num_features": 3},
        "value": {"file": VALUE_FILE, "objective": "tweedie", "num_features": 3},
    }
    loaded = ScoringModel.load(bundle)
    X = np.array([[10.0, 500.0, 3.0]])
    assert loaded.score(X).expected_value == pytest.approx(model.score(X).expected_value)


def test_a_truncated_booster_is_refused_before_lightgbm_parses_it(bundle, no_parse) -> None:
    data = (bundle / CHURN_FILE).read_bytes()
    (bundle / CHURN_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleIntegrityError, match=r"churn\.txt does not match its sha256 in manifest\.json"):
        ScoringModel.load(bundle)


def test_an_edited_bundle_json_is_refused(bundle, no_parse) -> None:
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    meta["margin"] = 0.5
    (bundle / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleIntegrityError, match=r"bundle\.json does not match its sha256"):
        ScoringModel.load(bundle)


def test_swapped_boosters_are_refused_even_with_recomputed_digests(bundle, no_parse) -> None:
    churn, value = (bundle / CHURN_FILE).read_bytes(), (bundle / VALUE_FILE).read_bytes()
    (bundle / CHURN_FILE).write_bytes(value)
    (bundle / VALUE_FILE).write_bytes(churn)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    for name in (CHURN_FILE, VALUE_FILE):  # an attacker (or a careless copy) recomputes the digests
        manifest["files"][name] = {"sha256": file_digest(bundle / name), "bytes": (bundle / name).stat().st_size}
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match=r"churn\.txt has objective 'tweedie'.*swapped"):
        ScoringModel.load(bundle)
    (bundle / MANIFEST_FILE).unlink()  # a bundle saved before manifests: the role check alone catches it
    with pytest.raises(BundleIntegrityError, match=r"churn\.txt has objective 'tweedie'.*swapped"):
        ScoringModel.load(bundle)


def test_a_booster_for_other_features_is_refused(bundle, no_parse) -> None:
    text = (bundle / VALUE_FILE).read_text().replace("spend_365d", "spend_30d")
    (bundle / VALUE_FILE).write_text(text)
    (bundle / MANIFEST_FILE).unlink()
    with pytest.raises(BundleIntegrityError, match=r"value\.txt has 3 features that do not match"):
        ScoringModel.load(bundle)


def test_a_bundle_without_manifest_loads_after_the_header_checks(bundle, no_parse, monkeypatch) -> None:
    (bundle / MANIFEST_FILE).unlink()
    data = (bundle / CHURN_FILE).read_text()
    (bundle / CHURN_FILE).write_text(data[: data.index("end of trees")])
    with pytest.raises(BundleIntegrityError, match=r"churn\.txt is truncated"):
        ScoringModel.load(bundle)
    (bundle / CHURN_FILE).write_text(data)
    monkeypatch.undo()  # LightGBM may parse it now
    assert ScoringModel.load(bundle).meta.feature_columns == COLUMNS


def test_a_file_that_crashes_lightgbm_only_kills_the_check_process(bundle) -> None:
    (bundle / MANIFEST_FILE).unlink()  # no digests: only the child process stands between the file and LightGBM
    abort_lightgbm(bundle / CHURN_FILE)
    with pytest.raises(loader.ModelRejected, match=r"crashed the process that loaded it \(SIG(ABRT|SEGV)\)"):
        loader.load_model(str(bundle))
    assert isinstance(loader.ModelRejected("x"), loader.ModelNotFound)  # the CLI's exit 2 with one sentence


def test_the_child_check_reports_an_integrity_error_in_one_line(bundle) -> None:
    (bundle / VALUE_FILE).write_text((bundle / VALUE_FILE).read_text()[:100])
    with pytest.raises(loader.ModelRejected, match=r"BundleIntegrityError: value\.txt does not match its sha256"):
        loader.load_model(str(bundle))


# --- MLflow: models from code, the champion gate ------------------------------------------------------------------


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts under tmp_path
    return uri


def register(model: ScoringModel, name: str, params: dict | None = None, metrics: dict | None = None) -> str:
    import mlflow

    from training import registry

    mlflow.set_experiment("integrity")
    with mlflow.start_run():
        mlflow.log_params(params or {})
        mlflow.log_metrics(metrics or {})
        version = registry.log_bundle(model, name, pd.DataFrame(1.0, index=range(5), columns=list(COLUMNS)))
    return version


def test_pyfunc_is_logged_from_code_and_loads_without_unpickling(model, tracking) -> None:
    import mlflow

    version = register(model, "integrity-pyfunc")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/integrity-pyfunc/{version}"))
    files = {p.name for p in local.rglob("*")}
    assert "python_model.pkl" not in files and not any(f.endswith((".pkl", ".cloudpickle")) for f in files)
    assert {"pyfunc_model.py", CHURN_FILE, VALUE_FILE, MANIFEST_FILE} <= files
    assert "pyfunc_model.py" in (local / "MLmodel").read_text()
    frame = pd.DataFrame([[10.0, 500.0, 3.0], [90.0, 5.0, 1.0]], columns=list(COLUMNS))
    out = mlflow.pyfunc.load_model(f"models:/integrity-pyfunc/{version}").predict(frame)
    expected = model.score(frame.to_numpy())
    assert out["churn_probability"].to_numpy() == pytest.approx(expected.churn_probability)
    assert out["expected_value"].to_numpy() == pytest.approx(expected.expected_value)


def gate_rows(n: int = 300) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    rows = pd.DataFrame(rng.uniform(0, 100, size=(n, len(COLUMNS))), columns=list(COLUMNS))
    return rows, (rows["recency_days"] > 50).to_numpy(int), rows["spend_365d"].to_numpy() * 2


def test_gate_compares_recorded_validation_metrics_on_the_same_cutoff(model, tracking) -> None:
    from training import registry

    name = "integrity-gate"
    params = {"validation_cutoff": "2024-07-02", "horizon_days": 90, "validation_scheme": "temporal"}
    params["cutoffs"] = "2024-06-02,2024-07-02,2024-10-01"
    version = register(model, name, params, {"model_churn_auc": 0.80, "model_value_normalized_gini": 0.60})
    registry.set_alias(name, registry.CHAMPION, version)
    rows, churned, value = gate_rows()
    validation = {k: params[k] for k in registry.VALIDATION_KEYS}

    better = registry.gate(
        name, {"churn_auc": 0.81, "value_normalized_gini": 0.61}, rows, churned, value, validation=validation
    )
    assert better.promoted and better.champion == {"churn_auc": 0.80, "value_normalized_gini": 0.60}
    assert better.comparison["method"] == "recorded_validation"
    assert better.comparison["validation_cutoff"] == "2024-07-02" and better.comparison["horizon_days"] == "90"
    assert "recorded validation metrics" in better.reason
    mixed = registry.gate(
        name, {"churn_auc": 0.81, "value_normalized_gini": 0.59}, rows, churned, value, validation=validation
    )
    assert not mixed.promoted and "does not beat" in mixed.reason
    json.dumps(mixed.to_dict())  # promotion.json

    moved = {**validation, "validation_cutoff": "2024-08-01"}  # another cutoff: the champion is scored on the rows
    scored = registry.gate(
        name, {"churn_auc": 0.5, "value_normalized_gini": 0.5}, rows, churned, value, validation=moved
    )
    assert scored.comparison["method"] == "champion_scored_on_challenger_rows"
    assert scored.champion == registry.score_primary(model, rows, churned, value)
    assert scored.comparison["champion_trained_through"] == "2024-12-30"
    assert scored.comparison["champion_trained_on_these_rows"] is True
    assert scored.comparison["note"].startswith("champion favoured: it trained on these rows")
    later = {**validation, "validation_cutoff": "2025-01-15"}
    fair = registry.gate(name, {"churn_auc": 0.5, "value_normalized_gini": 0.5}, rows, churned, value, validation=later)
    assert fair.comparison["champion_trained_on_these_rows"] is False


# --- the real server: start-up, reload and SIGHUP ------------------------------------------------------------------


def test_a_version_trained_with_customer_events_is_refused_by_the_scoring_loader(tmp_path) -> None:
    """Scoring paths cannot be given event logs yet: a bundle whose heads read event features is refused in one
    sentence naming them, instead of being scored with every event feature missing."""
    rng = np.random.default_rng(3)
    columns = ("recency_days", "unresolved_complaints")
    X = rng.uniform(0, 10, size=(200, 2))
    params = {"verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    heads = [
        lgb.train({**params, "objective": objective}, lgb.Dataset(X, y, feature_name=list(columns)), 4)
        for objective, y in (("binary", (X[:, 1] > 5).astype(float)), ("tweedie", X[:, 0]))
    ]
    base = make_model().meta
    meta = dataclasses.replace(base, feature_columns=columns, feature_descriptions={c: c for c in columns})
    ScoringModel(*heads, meta).save(tmp_path / "events")
    with pytest.raises(loader.ModelRejected, match=r"customer-event features \(unresolved_complaints\)"):
        loader.load_model(str(tmp_path / "events"), isolate=False)
    make_model().save(tmp_path / "plain")
    assert loader.load_model(str(tmp_path / "plain"), isolate=False).feature_columns == COLUMNS
