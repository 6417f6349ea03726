"""Package the service and one model version as a Bento that starts with no MLflow server.

``retention bento --model models:/retention@champion`` copies the resolved model bundle (both boosters, the
metadata and its version) into a build context next to the project's packages (:data:`PACKAGES`) and runs
``bentoml build``. The Bento sets ``RETENTION_MODEL_URI`` to the bundled folder, so ``bentoml serve`` or the
container made by ``bentoml containerize`` serves that exact version.

Its Python requirements are the project's own (:func:`requirements`): the core dependencies of ``pyproject.toml``
(or of the installed package's metadata when there is no source tree) and those of the online-store extras
(:data:`STORE_EXTRAS`), so a served Bento can read a PostgreSQL or Redis store too.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from packaging.requirements import Requirement

from retention.settings import Settings, get_settings
from serving.model import ScoringModel

BUNDLE_DIR = "bento_model"
PACKAGES = ("features", "training", "serving", "retention")
"""The project's packages copied into the Bento (the service imports from all of them)."""
DISTRIBUTION = "retention"
STORE_EXTRAS = ("postgres", "redis")
"""The ``pyproject.toml`` extras whose requirements the Bento adds to the core ones: the online-store drivers."""


def requirements(source_root: Path | None = None) -> tuple[str, ...]:
    """The Bento's Python requirements: the core dependencies, then those of :data:`STORE_EXTRAS` (without their
    ``extra == ...`` marker), as declared in ``source_root/pyproject.toml``, or in the installed distribution's
    metadata when ``source_root`` is None or has no ``pyproject.toml``."""
    pyproject = source_root / "pyproject.toml" if source_root is not None else None
    if pyproject is not None and pyproject.is_file():
        project = tomllib.loads(pyproject.read_text())["project"]
        extras = project.get("optional-dependencies", {})
        return (*project["dependencies"], *(r for extra in STORE_EXTRAS for r in extras.get(extra, ())))
    declared = [Requirement(r) for r in importlib.metadata.requires(DISTRIBUTION) or ()]
    core = [str(r) for r in declared if _extra(r) is None]
    stores = [_without_marker(r) for extra in STORE_EXTRAS for r in declared if _extra(r) == extra]
    return (*core, *stores)


def _extra(requirement: Requirement) -> str | None:
    """The extra a metadata requirement belongs to (``redis>=5; extra == "redis"`` -> ``redis``), None for a
    core dependency."""
    found = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", str(requirement.marker or ""))
    return found[1] if found else None


def _without_marker(requirement: Requirement) -> str:
    """``redis>=5; extra == "redis"`` -> ``redis>=5``."""
    return str(Requirement(str(requirement).split(";", 1)[0]))


def bentofile(version: str | None, requirements: Sequence[str]) -> str:
    """The ``bentofile.yaml`` of a Bento serving model ``version`` with the Python ``requirements``."""
    packages = "\n".join(f"    - {_yaml_string(p)}" for p in requirements)
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


def _yaml_string(text: str) -> str:
    """``text`` as a double-quoted YAML scalar (requirement markers contain double quotes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_context(model: ScoringModel, context: Path, source_root: Path) -> Path:
    """Lay out a build context: the project's packages, the model bundle with its version, and bentofile.yaml
    (requirements from ``source_root``'s ``pyproject.toml``, see :func:`requirements`)."""
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    for package in PACKAGES:
        shutil.copytree(source_root / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = model.save(context / BUNDLE_DIR)
    (bundle / "VERSION").write_text(str(model.version or "local"))
    (context / "bentofile.yaml").write_text(bentofile(model.version, requirements(source_root)))
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


def default_model_reference(settings: Settings | None = None) -> str:
    """The model the service loads: ``RETENTION_MODEL_URI`` if set, else the bundle shipped inside a Bento, else
    the default :attr:`Settings.model_uri` (the registry's champion)."""
    settings = settings or get_settings()
    if "model_uri" in settings.model_fields_set and settings.model_uri:
        return settings.model_uri
    shipped = Path(__file__).resolve().parent.parent / BUNDLE_DIR
    return str(shipped) if shipped.is_dir() else settings.model_uri
