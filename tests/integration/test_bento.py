"""A Bento carries the champion model and serves it with no MLflow server."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
import tomllib

import httpx
import yaml
from cli_util import REPO, run_cli
from packaging.requirements import Requirement
from server_util import free_port

from serving import bento

ROOT = REPO


def _pyproject_requirements() -> list[str]:
    """``pyproject.toml``'s core dependencies, then those of the online-store extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        *project["dependencies"],
        *project["optional-dependencies"]["postgres"],
        *project["optional-dependencies"]["redis"],
    ]


def test_the_bento_requires_the_project_s_own_dependencies() -> None:
    expected = _pyproject_requirements()
    assert any(Requirement(r).name == "pydantic-settings" for r in expected)  # a core dependency the old list lacked
    assert list(bento.requirements(ROOT)) == expected
    packages = yaml.safe_load(bento.bentofile("7", bento.requirements(ROOT)))["python"]["packages"]
    assert packages == expected  # markers with quotes survive the YAML (uvloop's sys_platform)


def test_without_a_source_tree_the_requirements_come_from_the_installed_metadata() -> None:
    declared = importlib.metadata.requires("retention")
    core = [r for r in declared if "extra ==" not in r]
    stores = [
        r.split(";")[0].strip() for extra in ("postgres", "redis") for r in declared if f'extra == "{extra}"' in r
    ]
    assert list(bento.requirements(None)) == [str(Requirement(r)) for r in core + stores]
    assert stores and all(";" not in r for r in stores)


def test_bento_serves_the_bundled_model_without_mlflow(workspace, tmp_path) -> None:
    context = tmp_path / "bento"
    built = run_cli("bento", "--context", str(context), cwd=workspace.root, env=workspace.env)
    assert built.returncode == 0, built.stderr
    assert "with model version 1" in built.stdout
    tag = built.stdout.split("built Bento ")[1].split()[0]
    assert (context / "bento_model" / "VERSION").read_text() == "1"
    bentofile = yaml.safe_load((context / "bentofile.yaml").read_text())
    assert bentofile["python"]["packages"] == _pyproject_requirements()
    assert all((context / package / "__init__.py").is_file() for package in bento.PACKAGES)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RETENTION_MODEL_URI", "RETENTION_STORE_URL")}
    env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # nothing listens there: the Bento must not need MLflow
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.5)
            try:
                status = httpx.get(base + "/readyz", timeout=2).status_code
            except httpx.HTTPError:
                status = None
        assert status == 200
        body = {
            "customers": [{"customer_id": "a", "transactions": [{"timestamp": "2024-11-01", "amount": 30}]}],
            "as_of": "2024-12-30",
        }
        response = httpx.post(base + "/predict", json=body, timeout=30)
        assert response.status_code == 200 and response.json()["model_version"] == "1"
    finally:
        proc.terminate()
        proc.wait(30)
