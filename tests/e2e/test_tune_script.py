"""scripts/tune.py as a user runs it: a process each, on tiny synthetic bins. Hydra finds
bincount's sweeper plugin on its own; the sweep prints its table and the retrain line; the same
command again continues the study. (Bad settings and a missing -m: tests/tuning/test_sweeper.py,
in-process.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.support.paths import SCRIPTS
from tests.support.tiny import TINY


def tune(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "tune.py"), *args], cwd=cwd, capture_output=True,
        text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_tune_m_sweeps_prints_the_best_and_the_same_command_continues_the_study(
    tmp_path: Path, cache_dir: Path,
) -> None:
    # The search space decides batch size and epochs: TINY's fixed values for them are dropped.
    tiny = [o for o in TINY if not o.startswith(("data.batch_size=", "trainer.max_epochs="))]
    command = ["-m", f"paths.root_dir={tmp_path}", f"paths.cache_dir={cache_dir}", *tiny,
               "tuner.study_name=e2e", "tuner.n_trials=1", "search_space.epochs.low=1",
               "search_space.epochs.high=2", "search_space.batch_size.choices=[8,16]"]
    first = tune(tmp_path, *command)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "optuna trials" in first.stdout and "best trial 0: val_loss=" in first.stdout
    assert "retrain with the best parameters:\n  python scripts/train.py " in first.stdout

    again = tune(tmp_path, *command)
    assert again.returncode == 0, again.stderr[-3000:]
    study_dir = tmp_path / "outputs" / "tune" / "e2e"
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{study_dir}/optuna.db")
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.COMPLETE),
                                                           (1, TrialState.COMPLETE)]
    assert (study_dir / "trial_1" / "metrics.json").is_file()
    assert (study_dir / "optimization_results.yaml").is_file()

