"""Resolve a model reference to a loaded :class:`~serving.model.ScoringModel` and its version.

A reference is either an MLflow model URI (``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/...``),
resolved against ``MLFLOW_TRACKING_URI`` (or MLflow's default local store), or a local directory holding a
logged model or a bare bundle (what a Bento carries, so it starts with no MLflow server).
"""

from __future__ import annotations

import re
from pathlib import Path

from serving.model import BUNDLE_FILE, ScoringModel

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
BUNDLE_ARTIFACT = "bundle"


class ModelNotFound(LookupError):
    """The model reference names no model that exists (unknown name, alias or path)."""


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


def load_model(reference: str, download_dir: str | Path | None = None) -> ScoringModel:
    """Load a model version for scoring; raises :class:`ModelNotFound` with one clear sentence."""
    path = Path(reference)
    if "://" not in reference and ":/" not in reference:
        if not path.exists():
            raise ModelNotFound(f"model path '{reference}' does not exist")
        version_file = path / "VERSION"
        version = version_file.read_text().strip() if version_file.exists() else None
        return ScoringModel.load(find_bundle_dir(path), version=version)
    import mlflow
    from mlflow.exceptions import MlflowException

    version = resolve_version(reference)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=reference, dst_path=None if download_dir is None else str(download_dir)
        )
    except MlflowException as exc:
        raise ModelNotFound(f"model '{reference}' cannot be downloaded: {str(exc).splitlines()[0]}") from exc
    return ScoringModel.load(find_bundle_dir(Path(local)), version=version)
