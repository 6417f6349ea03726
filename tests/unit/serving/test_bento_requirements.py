"""The Bento's requirements are the project's own dependencies: from pyproject.toml in a source tree, from the
installed package metadata without one (the build and the served Bento: tests/integration/test_bento.py)."""

from __future__ import annotations

import importlib.metadata
import tomllib

import yaml
from cli_util import REPO
from packaging.requirements import Requirement

from serving import bento


def _pyproject_requirements() -> list[str]:
    """``pyproject.toml``'s core dependencies, then those of the online-store extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [
        *project["dependencies"],
        *project["optional-dependencies"]["postgres"],
        *project["optional-dependencies"]["redis"],
    ]


def test_the_bento_requires_the_project_s_own_dependencies() -> None:
    expected = _pyproject_requirements()
    assert any(Requirement(r).name == "pydantic-settings" for r in expected)  # a core dependency the old list lacked
    assert list(bento.requirements(REPO)) == expected
    packages = yaml.safe_load(bento.bentofile("7", bento.requirements(REPO)))["python"]["packages"]
    assert packages == expected  # markers with quotes survive the YAML (uvloop's sys_platform)


def test_without_a_source_tree_the_requirements_come_from_the_installed_metadata() -> None:
    declared = importlib.metadata.requires("retention")
    core = [r for r in declared if "extra ==" not in r]
    stores = [
        r.split(";")[0].strip() for extra in ("postgres", "redis") for r in declared if f'extra == "{extra}"' in r
    ]
    assert list(bento.requirements(None)) == [str(Requirement(r)) for r in core + stores]
    assert stores and all(";" not in r for r in stores)
