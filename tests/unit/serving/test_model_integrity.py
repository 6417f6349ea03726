"""Reliability of model loading (issue 14): a damaged or swapped bundle never reaches LightGBM's parser in a serving
process, a crash while parsing only kills a check process, a broken champion leaves the service up and saying why,
SIGHUP to the PID ``retention serve`` prints reloads without a restart, the pyfunc is logged from code (no pickle)
and the champion gate says what it compared. Small hand-made bundles: no trained workspace needed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import types
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from serving import loader
from serving.model import (
    BUNDLE_FILE,
    CHURN_FILE,
    MANIFEST_FILE,
    VALUE_FILE,
    BundleIntegrityError,
    BundleMeta,
    ScoringModel,
    file_digest,
)

COLUMNS = ("recency_days", "spend_365d", "n_purchase_days")


def make_model(version: str | None = None) -> ScoringModel:
    rng = np.random.default_rng(7)
    X = rng.uniform(0, 100, size=(400, len(COLUMNS)))
    churned = (X[:, 0] + rng.normal(0, 20, len(X)) > 50).astype(float)
    value = np.maximum(X[:, 1] * 2 + rng.normal(0, 10, len(X)), 0)
    params = {"verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    churn = lgb.train(
        {**params, "objective": "binary"}, lgb.Dataset(X, churned, feature_name=list(COLUMNS)), num_boost_round=8
    )
    val = lgb.train(
        {**params, "objective": "tweedie"}, lgb.Dataset(X, value, feature_name=list(COLUMNS)), num_boost_round=8
    )
    meta = BundleMeta(
        feature_columns=COLUMNS,
        horizon_days=90,
        trained_as_of="2024-12-30",
        calibrator_x=(0.0, 1.0),
        calibrator_y=(0.0, 1.0),
        level_factor=1.0,
        margin=1.0,
        discount_rate=0.0,
        tier_names=("gold", "bronze"),
        tier_thresholds=(100.0, 0.0),
        segment_current_threshold=50.0,
        segment_future_threshold=100.0,
        feature_descriptions={c: c for c in COLUMNS},
    )
    return ScoringModel(churn, val, meta, version)


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


def abort_lightgbm(path: Path) -> None:
    """An edit that keeps the header and the end marker but makes LightGBM 4.7 abort while parsing."""
    path.write_text(path.read_text().replace("tree_sizes=", "tree_sizes=99999 ", 1))


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


def _server_helpers():
    import server_util as http

    return http.start_server, http.stop, getattr(http, "ADMIN", {})


def _wait(check, seconds: float = 90.0):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def _worker_pids(server) -> list[int]:
    from serving.supervise import worker_pids

    return worker_pids(server.proc.pid)


def served_bundle(tmp_path: Path, version: str, model: ScoringModel | None = None) -> Path:
    folder = (model or make_model()).save(tmp_path / "served")
    (folder / "VERSION").write_text(version)
    return folder


def test_a_champion_that_cannot_load_leaves_the_service_up_and_saying_why(tmp_path) -> None:
    start_server, stop, _ = _server_helpers()
    folder = served_bundle(tmp_path, "7")
    (folder / MANIFEST_FILE).unlink()
    abort_lightgbm(folder / CHURN_FILE)
    workspace = types.SimpleNamespace(env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}, root=tmp_path)
    s = start_server(workspace, None, str(folder), wait_ready=False)
    try:
        assert _wait(lambda: "crashed" in s.get("/readyz").text), s.get("/readyz").text
        ready = s.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == 503
        assert (
            "failed to load" in ready.json()["error"] and "crashed the process that loaded it" in ready.json()["error"]
        )
        workers = _worker_pids(s)
        assert len(workers) == 1
        assert s.get("/livez").status_code == 200
        predict = s.post("/predict", {"customers": [{"customer_id": "a"}]})
        assert predict.status_code == 503 and "crashed the process that loaded it" in predict.json()["error"]
        assert s.post("/model", {}).status_code == 503
        assert _worker_pids(s) == workers  # the worker never died
        # the fixed version loads on SIGHUP to the main PID, in the same worker
        served_bundle(tmp_path, "8")
        s.proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: s.get("/readyz").status_code == 200)
        assert s.post("/model", {}).json()["model_version"] == "8"
        assert _worker_pids(s) == workers
    finally:
        stop(s)


def test_a_damaged_reload_keeps_the_old_version_and_the_worker(tmp_path) -> None:
    start_server, stop, admin = _server_helpers()
    folder = served_bundle(tmp_path, "1")
    workspace = types.SimpleNamespace(env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}, root=tmp_path)
    s = start_server(workspace, None, str(folder))
    try:
        workers = _worker_pids(s)
        abort_lightgbm(folder / CHURN_FILE)  # digest mismatch: refused before any parse
        (folder / "VERSION").write_text("2")
        reload = s.post("/admin/reload", {}, headers=admin)
        assert reload.status_code == 409 and "churn.txt does not match its sha256" in reload.json()["error"]
        (folder / MANIFEST_FILE).unlink()  # no digests: the child check takes the crash
        reload = s.post("/admin/reload", {}, headers=admin)
        assert reload.status_code == 409 and "crashed the process that loaded it" in reload.json()["error"]
        s.proc.send_signal(signal.SIGHUP)  # the same through SIGHUP to the printed main PID
        assert _wait(lambda: "SIGHUP: reloading the model in worker PID" in _log(tmp_path, s))
        assert s.post("/model", {}).json()["model_version"] == "1"
        body = s.post("/predict", {"customers": [{"customer_id": "nobody"}]})
        assert body.status_code == 200 and body.json()["model_version"] == "1"
        assert s.get("/readyz").status_code == 200
        assert _worker_pids(s) == workers
    finally:
        stop(s)


def _log(root: Path, server) -> str:
    port = server.base.rsplit(":", 1)[1]
    return (root / f"server-{port}.log").read_text(errors="replace")


def test_retention_serve_prints_the_main_pid_that_reloads(tmp_path) -> None:
    start_server, stop, _ = _server_helpers()
    folder = served_bundle(tmp_path, "1")
    workspace = types.SimpleNamespace(env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}, root=tmp_path)
    s = start_server(workspace, None, str(folder))
    try:
        assert f"main PID {s.proc.pid} (kill -HUP {s.proc.pid} reloads the model" in _log(tmp_path, s)
        workers = _worker_pids(s)
        shutil.rmtree(folder)
        served_bundle(tmp_path, "2")
        os.kill(s.proc.pid, signal.SIGHUP)
        assert _wait(lambda: s.post("/model", {}).json().get("model_version") == "2")
        assert _worker_pids(s) == workers  # reloaded in place: no worker restart
    finally:
        stop(s)


def test_the_batch_cli_refuses_a_damaged_model_in_one_sentence(bundle, tmp_path) -> None:
    from cli_util import run_cli

    (bundle / MANIFEST_FILE).unlink()
    abort_lightgbm(bundle / CHURN_FILE)
    out = tmp_path / "scores.parquet"
    args = ["score", "-t", str(tmp_path / "none.csv"), "--as-of", "2024-12-30", "--out", str(out), "--no-record"]
    result = run_cli(*args, "--model", str(bundle))
    assert result.returncode == 2, result.stderr
    assert "crashed the process that loaded it" in result.stderr and not out.exists()
