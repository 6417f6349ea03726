"""The notebooks in ``notebooks/`` run top to bottom without error, and are committed without outputs.

Each notebook runs with nbclient in a kernel of *this* interpreter (the project's ``.venv``): a kernelspec is
installed into a temporary prefix with ``python -m ipykernel install --prefix`` and handed to the kernel manager
directly, so a ``python3`` kernelspec of the user or the system can never pick another Python.

The notebooks write only to ``$RETENTION_NOTEBOOK_DIR`` (a temporary folder here), MLflow store included.
Notebook 01 runs in a folder of its own; 02 and then 03 share one, as a user running them in order would, so 03
explains the champion 02 registered (run alone, 03 trains one first with the same ``rt.train`` call as 02). Notebook 04
runs in a folder of its own and registers its versions under a model name of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ("01-explore-transactions", "02-train-and-compare", "03-explain-and-rank", "04-retention-decisions")
KERNEL = "retention-venv"
CELL_TIMEOUT_S = 600


def notebook_path(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """Kernelspec directory holding one kernel, ``retention-venv``, that runs this interpreter."""
    prefix = tmp_path_factory.mktemp("jupyter")
    command = [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    kernels = prefix / "share" / "jupyter" / "kernels"
    spec = json.loads((kernels / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable, spec["argv"]
    return kernels


def execute(name: str, workdir: Path, kernel_dir: Path) -> nbformat.NotebookNode:
    """Run one committed notebook in ``workdir``; raises ``CellExecutionError`` (with the cell) on any error."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(notebook_path(name), as_version=4)
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(
        nb, km=manager, timeout=CELL_TIMEOUT_S, allow_errors=False, resources={"metadata": {"path": str(workdir)}}
    )
    env = {**os.environ, "RETENTION_NOTEBOOK_DIR": str(workdir)}
    # LightGBM's OpenMP threads busy-wait when the CPUs are oversubscribed (pytest-xdist workers, other jobs):
    # one thread per kernel keeps a training run at seconds instead of minutes there. A user's setting wins.
    env.setdefault("OMP_NUM_THREADS", "1")
    client.execute(env=env)
    return nb


def images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", ()))


def stream_text(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", ()) if "text" in out)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_valid_and_has_no_outputs(name: str) -> None:
    nb = nbformat.read(notebook_path(name), as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "a notebook with no code"
    for cell in code:
        assert cell.outputs == [], f"cell {cell.get('id')} has outputs: strip them before committing"
        assert cell.execution_count is None, f"cell {cell.get('id')} has an execution count"
        assert "execution" not in cell.metadata, f"cell {cell.get('id')} has execution timing metadata"
    assert nb.metadata.get("kernelspec", {}).get("language") == "python"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_holds_no_logic_of_its_own(name: str) -> None:
    """Feature and model logic lives in the packages (``retention/analysis.py`` for exploration), not in cells."""
    nb = nbformat.read(notebook_path(name), as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            stripped = line.lstrip()
            assert not stripped.startswith(("def ", "class ", "async def ")), f"{name}: define it in a package"
            assert "lambda " not in stripped, f"{name}: define it in a package: {stripped}"


@pytest.mark.slow
def test_explore_notebook_runs(tmp_path: Path, kernel_dir: Path) -> None:
    nb = execute("01-explore-transactions", tmp_path, kernel_dir)
    assert images(nb) >= 6, "every plot cell renders a figure"
    text = stream_text(nb)
    assert "Data quality" in text and "the top 20% of customers hold" in text
    assert (tmp_path / "transactions.parquet").exists()


@pytest.mark.slow
def test_train_then_explain_notebooks_run(tmp_path: Path, kernel_dir: Path) -> None:
    trained = execute("02-train-and-compare", tmp_path, kernel_dir)
    assert images(trained) >= 6
    text = stream_text(trained)
    assert "registered retention version 1: no champion yet" in text
    assert "aliases:" in text and "'champion'" in text
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir(), "MLflow stays in the folder"

    explained = execute("03-explain-and-rank", tmp_path, kernel_dir)
    assert images(explained) >= 4
    text = stream_text(explained)
    assert "Successfully registered" not in text, "03 reuses the champion 02 registered"
    assert "scored 1,500 customers" in text
    assert (tmp_path / "retention_list.parquet").exists()


@pytest.mark.slow
def test_notebook_04_decisions_runs(tmp_path: Path, kernel_dir: Path) -> None:
    nb = execute("04-retention-decisions", tmp_path, kernel_dir)
    assert images(nb) >= 4, "profit curve, budget curve, Qini curve and whom each list contacts are drawn"
    text = stream_text(nb)
    assert "are unprofitable: together -" in text, "the 80/20/30 view names the unprofitable customers"
    assert "(uplift: assumed)" in text and "(uplift: model)" in text, "a plan without and one with campaign history"
    assert "customers with an expected benefit <= 0 contacted: 0" in text
    assert "unprofitable customers contacted: 0" in text
    assert "uplift heads trusted: True" in text
    assert "sleeping dogs contacted: 0" in text and "flagged customers the uplift plan contacts: 0" in text
    assert "met: True" in text, "the uplift plan earns the goal multiple of churn-risk targeting's true profit"
    report = tmp_path / "plan.report.html"
    assert report.exists() and "Retention plan" in report.read_text()
    assert (tmp_path / "plan.parquet").exists() and (tmp_path / "economics.json").exists()
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir(), "MLflow stays in the folder"
