"""`python scripts/tune.py -m` for real, in this process, through bincount's Hydra sweeper plugin
and Hydra's launcher, on tiny synthetic bins: trials that train, report every epoch and are
pruned or fail for real; the plugin's exit 2 on a user's mistake."""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from bincount.tuning.objective import objective
from tests.support.paths import CONF
from tests.support.tiny import TINY

KEYS = {"model.optimizer.lr", "data.batch_size", "trainer.max_epochs"}
LR, BATCH, EPOCHS = "model.optimizer.lr", "data.batch_size", "trainer.max_epochs"


# scripts/tune.py's app, with the config dir given absolutely (the script names it relative to
# itself, which Hydra resolves only for a script run as __main__).
TUNE = hydra.main(config_path=str(CONF), config_name="tune", version_base="1.3")(objective)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tune(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache_dir: Path) -> Callable[..., Path]:
    """Run ``scripts/tune.py -m`` in-process with tiny trials; returns the study's folder."""
    # The search space decides batch size and epochs: drop TINY's fixed values for them.
    tiny = [o for o in TINY if not o.startswith((f"{BATCH}=", f"{EPOCHS}="))]

    def _tune(study: str, *overrides: str) -> Path:
        monkeypatch.setattr(sys, "argv", [
            "tune.py", "-m", f"paths.root_dir={tmp_path}", f"paths.cache_dir={cache_dir}", *tiny,
            f"tuner.study_name={study}", "search_space.epochs.low=1", "search_space.epochs.high=2",
            "search_space.batch_size.choices=[8,16]", *overrides,
        ])
        TUNE()
        return study_path(tmp_path, study)

    return _tune


def study_path(root: Path, study: str) -> Path:
    return root / "outputs" / "tune" / study


def load_study(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir}/optuna.db")


def tensorboard_hparams(run_dir: Path) -> dict[str, object]:
    """The hyperparameters a TensorBoard run shows in its HPARAMS tab."""
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = HParamsPluginData.FromString(content).session_start_info
    return {k: v.number_value if v.HasField("number_value") else v.string_value
            for k, v in info.hparams.items()}


@pytest.mark.slow
def test_a_sweep_trains_its_trials_writes_the_best_and_resumes(tune: Callable[..., Path]) -> None:
    narrowed = f"{LR}=tag(log, interval(0.002, 0.004))"  # a sweep on the command line
    study_dir = tune("sweep", "tuner.n_trials=2", narrowed)

    study = load_study(study_dir)
    assert [t.number for t in study.trials] == [0, 1]
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE and math.isfinite(trial.value)
        assert set(trial.params) == KEYS
        assert 0.002 <= trial.params[LR] <= 0.004
        assert trial.params[BATCH] in (8, 16) and trial.params[EPOCHS] in (1, 2)
        # Each trial is one train(cfg) in its own folder; its value is train's val_loss,
        # reported to the study after every epoch.
        run = study_dir / f"trial_{trial.number}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["val_loss"])
        assert sorted(trial.intermediate_values) == list(range(trial.params[EPOCHS]))
        assert tensorboard_hparams(run)["model/optimizer/lr"] == pytest.approx(trial.params[LR])

    results = yaml.safe_load((study_dir / "optimization_results.yaml").read_text())
    assert results["best_trial"] == study.best_trial.number
    # The override line retrains with the best parameters (and the sweep's other overrides).
    argv = shlex.split(results["retrain"])
    assert argv[:2] == ["python", "scripts/train.py"] and narrowed not in argv
    with initialize_config_dir(str(CONF), version_base="1.3"):
        retrain = compose("train", overrides=argv[2:])
    assert retrain.model.optimizer.lr == pytest.approx(study.best_params[LR])
    assert retrain.data.batch_size == study.best_params[BATCH]
    assert retrain.trainer.max_epochs == study.best_params[EPOCHS]
    assert retrain.model.arch == "resnet18" and retrain.data.image_size == 32

    # The same command with the same study name continues the study.
    first = (study_dir / "trial_0" / "metrics.json").read_text()
    tune("sweep", "tuner.n_trials=1", narrowed)
    study = load_study(study_dir)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert (study_dir / "trial_0" / "metrics.json").read_text() == first
    assert (study_dir / "trial_2" / "metrics.json").is_file()


def enqueue(study_dir: Path, *params: dict[str, object]) -> None:
    """Create the study ahead of the sweep with these trials first in line (as a user would to
    try known settings); the sweeper then asks for them in this order."""
    study_dir.mkdir(parents=True)
    study = optuna.create_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir}/optuna.db")
    for p in params:
        study.enqueue_trial(p)


@pytest.mark.slow
def test_a_bad_trial_is_pruned_and_crashing_or_diverging_ones_recorded_as_failed(
    tune: Callable[..., Path], tmp_path: Path,
) -> None:
    good = {LR: 0.003, BATCH: 8, EPOCHS: 2}
    study_dir = study_path(tmp_path, "prune")
    enqueue(study_dir, good, good,
            {LR: 10.0, BATCH: 8, EPOCHS: 2},   # far worse than the median after epoch 0
            {LR: 0.003, BATCH: 0, EPOCHS: 1},  # the DataLoader refuses batch_size=0
            {LR: 1e30, BATCH: 8, EPOCHS: 2})   # the weights overflow: the loss is not finite
    tune("prune", "tuner.n_trials=5", "tuner.pruner=median", "search_space.lr.high=1e30",
         "search_space.batch_size.choices=[0,8]", "tuner.pruners.median.n_startup_trials=2",
         "tuner.pruners.median.n_warmup_steps=0", "tuner.max_failure_rate=0.4")

    trials = load_study(study_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE,
                                         TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    pruned, crashed, diverged = trials[2:]
    assert list(pruned.intermediate_values) == [0]  # stopped after its first of 2 epochs
    assert pruned.intermediate_values[0] > max(t.intermediate_values[0] for t in trials[:2])
    assert not (study_dir / "trial_2" / "metrics.json").exists()
    assert tensorboard_hparams(study_dir / "trial_2")["pruned"] == 1.0
    assert "batch_size" in crashed.user_attrs["fail_reason"]
    assert diverged.user_attrs["fail_reason"].startswith("NonFiniteObjective: val_loss=")
    assert "at epoch 0" in diverged.user_attrs["fail_reason"]  # not trained on to the end

    rows = yaml.safe_load((study_dir / "optimization_results.yaml").read_text())["trials"]
    assert [(r["state"], r["epochs"]) for r in rows] == [
        ("COMPLETE", 2), ("COMPLETE", 2), ("PRUNED", 1), ("FAIL", None), ("FAIL", None)]
    assert "batch_size" in rows[3]["note"] and "NonFiniteObjective" in rows[4]["note"]


@pytest.mark.slow
def test_more_failures_than_the_budget_stop_the_sweep_with_their_reasons(
    tune: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tune("fail", "tuner.n_trials=3", "tuner.max_failure_rate=0",
             "search_space.batch_size.choices=[0]")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: 1 trials failed, more than tuner.max_failure_rate=0.0 of 3 allows" in err
    assert "trial 0: BincountError: data.batch_size: expected an integer >= 1, got 0" in err
    (trial,) = load_study(study_path(tmp_path, "fail")).trials
    assert trial.state == TrialState.FAIL and "batch_size" in trial.user_attrs["fail_reason"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["search_space.lr.low=0"], "search_space.lr.low: a log scale needs low > 0"),
        (["tuner.pruner=sometimes"], "tuner.pruner: unknown pruner 'sometimes'"),
        (["tuner.n_trials=0"], "tuner.n_trials: expected a positive integer"),
        (["model.optimizer.lr=tag(log, interval(0, 1))"],
         "model.optimizer.lr: a log scale needs low > 0"),
        (["+search_space.x={key: model.optimizer.nonexistent, type: int, low: 1, high: 3}"],
         "the trials' overrides do not compose the config: Could not override "
         "'model.optimizer.nonexistent'"),
    ],
)
def test_bad_tuner_settings_exit_2_before_any_trial_trains(
    tune: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    overrides: list[str], message: str,
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tune("bad", *overrides)
    assert exit_info.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not list(study_path(tmp_path, "bad").glob("trial_*"))


def test_without_multirun_tune_says_to_add_m(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["tune.py", f"paths.root_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_info:
        TUNE()
    assert exit_info.value.code == 2
    assert "add -m" in capsys.readouterr().err
