"""Resolve a model reference to a loaded :class:`~serving.model.ScoringModel` and its version.

A reference is either an MLflow model URI (``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/...``),
resolved against ``MLFLOW_TRACKING_URI`` (or MLflow's default local store), or a local directory holding a
logged model or a bare bundle (what a Bento carries, so it starts with no MLflow server).

Loading is in three steps, so that no file can crash the calling process (a server, a batch job, the gate):
the bundle is downloaded, loaded and scored once on a zero row in a child process (:func:`check_in_child`;
LightGBM can segfault or abort on a damaged model file, and then only the child dies), and only when the child
exited 0 is it parsed here; :meth:`ScoringModel.load` then checks the manifest's digests and the boosters' roles
again before LightGBM reads a byte. A rejected bundle raises :class:`ModelRejected` naming the file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from retention.settings import get_settings
from serving.model import BUNDLE_FILE, BundleIntegrityError, ScoringModel

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
BUNDLE_ARTIFACT = "bundle"


class ModelNotFound(LookupError):
    """The model reference names no model that exists (unknown name, alias or path)."""


class ModelRejected(ModelNotFound):
    """The model exists but is damaged: a file fails its digest or role check, or loading it crashed a child."""


_CHILD_CHECK = """
import sys
try:
    import numpy as np
    from serving.model import ScoringModel
    model = ScoringModel.load(sys.argv[1])
    zero = np.zeros((1, len(model.feature_columns)))
    model.score(zero, num_threads=1)
    model.churn_contributions(zero, num_threads=1)
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(3)
"""


def check_in_child(bundle_dir: str | Path, timeout: float | None = None) -> None:
    """Load the bundle and score a zero row in a child process; raises :class:`ModelRejected` unless it exits 0.

    The child runs this interpreter with the ``serving`` package's parent on ``PYTHONPATH``; a crash
    (segfault, abort) or a timeout is reported with the signal, an exception with its last line.
    """
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD_CHECK, str(bundle_dir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=get_settings().model_check_timeout if timeout is None else timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelRejected(
            f"model bundle '{bundle_dir}' did not load within {exc.timeout:.0f} s in a check process"
        ) from None
    if done.returncode == 0:
        return
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else -done.returncode
        raise ModelRejected(f"model bundle '{bundle_dir}' crashed the process that loaded it ({name}): a damaged file")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines else f"exit status {done.returncode}"
    raise ModelRejected(f"model bundle '{bundle_dir}' failed to load: {reason}")


def load_bundle(bundle_dir: Path, version: str | None, isolate: bool = True) -> ScoringModel:
    """:func:`check_in_child` (when ``isolate``), then :meth:`ScoringModel.load` in this process."""
    if isolate:
        check_in_child(bundle_dir)
    try:
        model = ScoringModel.load(bundle_dir, version=version)
    except BundleIntegrityError as exc:
        raise ModelRejected(f"model bundle '{bundle_dir}' failed its integrity check: {exc}") from exc
    refuse_event_features(model, bundle_dir)
    return model


def refuse_event_features(model: ScoringModel, bundle_dir: Path) -> None:
    """:class:`ModelRejected` for a version trained with customer events (``retention train --events``): the batch
    job, the Spark engine and the service do not read event logs yet, so its event features would all be missing
    and its scores quietly worse."""
    from features.event_features import EVENT_FEATURE_DESCRIPTIONS

    used = [name for name in model.feature_columns if name in EVENT_FEATURE_DESCRIPTIONS]
    if used:
        shown = ", ".join(used[:3]) + (", ..." if len(used) > 3 else "")
        raise ModelRejected(
            f"model bundle '{bundle_dir}' reads customer-event features ({shown}) that scoring cannot be given yet:"
            " score with a version trained without --events"
        )


def find_bundle_dir(root: Path) -> Path:
    """The bundle directory inside a downloaded pyfunc model, or ``root`` itself when it is a bundle."""
    if (root / BUNDLE_FILE).exists():
        return root
    for candidate in (root / "artifacts" / BUNDLE_ARTIFACT, *root.rglob(BUNDLE_FILE)):
        candidate = candidate if candidate.is_dir() else candidate.parent
        if (candidate / BUNDLE_FILE).exists():
            return candidate
    raise ModelNotFound(f"no scoring bundle ({BUNDLE_FILE}) under '{root}'")


def resolve_version(uri: str) -> str | None:
    """The registry version a ``models:/`` URI points at (None for other references)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        if match := ALIAS_URI.match(uri):
            return str(client.get_model_version_by_alias(match["name"], match["alias"]).version)
        if match := VERSION_URI.match(uri):
            return str(client.get_model_version(match["name"], match["version"]).version)
    except MlflowException as exc:
        raise ModelNotFound(f"model '{uri}' is not in the registry: {str(exc).splitlines()[0]}") from exc
    return None


def pin_reference(reference: str) -> str:
    """The reference of exactly the version ``reference`` names now: ``models:/NAME/VERSION`` for an alias URI
    (asked of the registry; raises :class:`ModelNotFound` for an unknown alias), ``reference`` itself otherwise
    (a version URI or a local directory, which names its files by path)."""
    match = ALIAS_URI.match(reference)
    return f"models:/{match['name']}/{resolve_version(reference)}" if match else reference


def load_model(reference: str, download_dir: str | Path | None = None, *, isolate: bool = True) -> ScoringModel:
    """Load a model version for scoring; raises :class:`ModelNotFound` (or :class:`ModelRejected`) with one clear
    sentence. ``isolate=False`` skips the child-process check (only for bundles this process just wrote)."""
    path = Path(reference)
    if "://" not in reference and ":/" not in reference:
        if not path.exists():
            raise ModelNotFound(f"model path '{reference}' does not exist")
        version_file = path / "VERSION"
        version = version_file.read_text().strip() if version_file.exists() else None
        return load_bundle(find_bundle_dir(path), version, isolate)
    import mlflow
    from mlflow.exceptions import MlflowException

    version = resolve_version(reference)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=reference, dst_path=None if download_dir is None else str(download_dir)
        )
    except MlflowException as exc:
        raise ModelNotFound(f"model '{reference}' cannot be downloaded: {str(exc).splitlines()[0]}") from exc
    return load_bundle(find_bundle_dir(Path(local)), version, isolate)
