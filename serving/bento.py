"""Package the service and one model version as a Bento that starts with no MLflow server.

``retention bento --model models:/retention@champion`` copies the resolved model bundle (both boosters, the
metadata and its version) into a build context next to the ``features`` and ``serving`` packages and runs
``bentoml build``. The Bento sets ``RETENTION_MODEL_URI`` to the bundled folder, so ``bentoml serve`` or the
container made by ``bentoml containerize`` serves that exact version.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from serving.model import ScoringModel

BUNDLE_DIR = "bento_model"
PACKAGES = ("features", "serving")
REQUIREMENTS = (
    "numpy>=2.4.6",
    "pandas>=3.1.1",
    "pyarrow>=18",
    "scipy>=1.14",
    "lightgbm>=4.7.0",
    "bentoml>=1.4.39",
    "pydantic>=2.14.3",
    "mlflow>=3.17.2",
    "sqlalchemy>=2.0",
    "psycopg[binary]>=3.2",
    "redis>=5",
)


def bentofile(version: str | None) -> str:
    packages = "\n".join(f'    - "{p}"' for p in REQUIREMENTS)
    includes = "\n".join(f'  - "{p}/**/*.py"' for p in PACKAGES)
    return f"""service: "serving.service:Retention"
labels:
  model_version: "{version or "local"}"
include:
{includes}
  - "{BUNDLE_DIR}/**"
python:
  packages:
{packages}
envs:
  - name: RETENTION_MODEL_URI
    value: "{BUNDLE_DIR}"
"""


def write_context(model: ScoringModel, context: Path, source_root: Path) -> Path:
    """Lay out a build context: the two packages, the model bundle with its version, and bentofile.yaml."""
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    for package in PACKAGES:
        shutil.copytree(source_root / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = model.save(context / BUNDLE_DIR)
    (bundle / "VERSION").write_text(str(model.version or "local"))
    (context / "bentofile.yaml").write_text(bentofile(model.version))
    return context


def build(context: Path) -> str:
    """Run ``bentoml build`` on the context; returns the Bento tag it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", ".", "--output", "tag"],
        cwd=context,  # bentoml reads the bentofile relative to the working directory
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bentoml build failed: {result.stderr.strip().splitlines()[-1:]}")
    lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
    return lines[-1].replace("__tag__:", "").strip()


def default_model_reference(default: str) -> str:
    """``RETENTION_MODEL_URI`` if set, else the bundle shipped inside a Bento, else ``default``."""
    import os

    if os.environ.get("RETENTION_MODEL_URI"):
        return os.environ["RETENTION_MODEL_URI"]
    shipped = Path(__file__).resolve().parent.parent / BUNDLE_DIR
    return str(shipped) if shipped.is_dir() else default
