"""The notebooks run top to bottom in a fresh kernel, headless and offline, at tiny sizes set
through their parameters cell; and the committed copies carry no outputs."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import optuna
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode
from optuna.trial import TrialState

from tests.support.paths import ROOT

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_explore_data", "02_train_and_evaluate", "03_tune_and_deploy"]
PARAMETERS_TAG = "parameters"


def inject_parameters(nb: NotebookNode, parameters: dict[str, Any]) -> None:
    """Papermill's convention: a cell right after the one tagged "parameters" overrides it."""
    tagged = [i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(tagged[0] + 1, cell)


def execute(name: str, parameters: dict[str, Any], workdir: Path, timeout: float) -> NotebookNode:
    """Run every cell in a new kernel started in ``workdir``; a cell error fails the run, and so
    does the whole notebook taking longer than ``timeout`` seconds."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    inject_parameters(nb, parameters)
    client = NotebookClient(  # no per-cell limit: the whole run has one
        nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    start = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(client.async_execute(), timeout))
    except Exception:
        # Cancelled mid-cell, nbclient shuts the kernel down and reports a dead kernel instead.
        if time.monotonic() - start >= timeout:
            pytest.fail(f"{name}.ipynb took longer than {timeout} s")
        raise
    finally:
        # Keep the executed copy for a look after a failure (outputs never go into git).
        nbformat.write(nb, workdir / f"{name}.executed.ipynb")
    return nb


def text_output(nb: NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def figures(nb: NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What CI has: no display, no AWS role (so the SageMaker cells are skipped). One torch
    thread: on a busy 2-core machine two threads per process run several times slower."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root_dir for the three notebooks: the synthetic set is rendered once."""
    return tmp_path_factory.mktemp("notebook_root")


def check_explore_data(nb: NotebookNode, synthetic: bool) -> None:
    text = text_output(nb)
    # the per-count table of the packaged list, and the split manifest's rows
    assert "10441" in text and "1228" in text and "2666" in text
    assert "train" in text and "val" in text and "test" in text
    assert ("synthetic bins" in text) == synthetic
    # counts bar, sample counts, photo grid, sizes, transforms, metadata, split balance
    assert figures(nb) >= 7


@pytest.mark.slow
def test_explore_data_on_the_real_sample(
    sample_dir: Path, root: Path, tmp_path: Path, kernel_env: None
) -> None:
    parameters = {"root_dir": str(root), "sample_dir": str(sample_dir)}
    nb = execute("01_explore_data", parameters, tmp_path, timeout=150)
    check_explore_data(nb, synthetic=False)
    assert "400 bins from the real ABID sample" in text_output(nb)


@pytest.mark.slow
def test_explore_data_without_the_sample_shows_synthetic_bins(
    root: Path, tmp_path: Path, kernel_env: None
) -> None:
    parameters = {"root_dir": str(root), "sample_dir": str(tmp_path / "no_sample")}
    nb = execute("01_explore_data", parameters, tmp_path, timeout=150)
    check_explore_data(nb, synthetic=True)


@pytest.mark.slow
def test_train_and_evaluate_trains_and_reads_its_results_back(
    root: Path, tmp_path: Path, kernel_env: None
) -> None:
    nb = execute("02_train_and_evaluate", {"root_dir": str(root)}, tmp_path, timeout=300)
    runs = list((root / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert (runs[0] / "model" / "model.pt").is_file()
    text = text_output(nb)
    assert f"{metrics['test_acc']:.3f}" in text  # the notebook reports the run's own metrics
    assert "worst" in text
    # TensorBoard curves, confusion matrix, worst predictions
    assert figures(nb) >= 3


@pytest.mark.slow
def test_tune_and_deploy_runs_a_study_retrains_and_serves(
    root: Path, tmp_path: Path, kernel_env: None
) -> None:
    nb = execute("03_tune_and_deploy", {"root_dir": str(root)}, tmp_path, timeout=480)
    study_dir = root / "outputs" / "tune" / "notebook"
    study = optuna.load_study(study_name="notebook", storage=f"sqlite:///{study_dir}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(set(t.params) == {"model.optimizer.lr", "data.batch_size"} for t in study.trials)
    assert (study_dir / "best" / "model" / "model.pt").is_file()  # the best trial, retrained
    assert figures(nb) >= 2  # optimization history, slice plot

    text = text_output(nb)
    answers = [json.loads(a) for a in re.findall(r"\(true count \d\): (\{.*\})", text)]
    assert len(answers) == 4  # the local endpoint answered every photo sent
    for answer in answers:
        assert answer["count"] in range(1, 6)
        assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    port = int(re.search(r"local endpoint: http://127\.0\.0\.1:(\d+)", text).group(1))
    with pytest.raises(ConnectionRefusedError):  # and it was stopped after the cell
        socket.create_connection(("127.0.0.1", port), timeout=5)

    assert "SAGEMAKER_ROLE is not set" in text  # the AWS cells said why they did nothing
    assert text.count("skipped (no SAGEMAKER_ROLE)") == 3


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs_and_a_parameters_cell(name: str) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None] == [], (
        f"{path} has outputs or execution counts: strip them with `nbstripout {path}`"
    )
    # nbstripout as a git filter or pre-commit hook would run it: it must find nothing to strip.
    verify = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--verify", str(path)], capture_output=True, text=True
    )
    assert verify.returncode == 0, (
        f"{path} carries what nbstripout strips (run `nbstripout {path}`): {verify.stdout}"
    )
    assert sum(PARAMETERS_TAG in c.metadata.get("tags", []) for c in code) == 1
    assert nb.cells[0].cell_type == "markdown", "a notebook opens by saying what it shows"
