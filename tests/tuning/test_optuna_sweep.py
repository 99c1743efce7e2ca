"""The Optuna sweep on a real SQLite study, with a stand-in launcher that returns what a trial's
job would (a value, a Pruned, an exception) without training: what it asks, what it tells the
study, the failure budget, resuming, the results file and the retrain line."""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from bincount.tuning.optuna_sweep import OptunaSweep, Pruned, plan_trials
from bincount.tuning.search_space import SearchSpaceError, optuna_distributions
from bincount.tuning.settings import OptunaSettings, TuningError

LR, BATCH, EPOCHS = "model.optimizer.lr", "data.batch_size", "trainer.max_epochs"
Outcome = Callable[[dict[str, str]], Any]  # a job's overrides -> its value, Pruned or exception


class Jobs:
    """Records each launched batch; each job's return comes from ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.batches: list[list[list[str]]] = []

    def __call__(self, batch: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        self.batches.append([list(job) for job in batch])
        returns = []
        for job in batch:
            values = dict(o.split("=", 1) for o in job)
            try:
                ret = JobReturn(overrides=job, status=JobStatus.COMPLETED,
                                _return_value=self.outcome(values))
            except Exception as err:  # as Hydra's run_job records a job's exception
                ret = JobReturn(overrides=job, status=JobStatus.FAILED, _return_value=err)
            returns.append(ret)
        return returns


@pytest.fixture
def sweep(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> Callable[..., OptunaSweep]:
    """An OptunaSweep as ``scripts/tune.py -m <overrides>`` configures it."""

    def _sweep(jobs: Jobs, *overrides: str) -> OptunaSweep:
        cfg = make_cfg(*overrides, name="tune", tiny=False)
        settings = OptunaSettings.from_cfg(cfg.tuner, cfg.objective)
        return OptunaSweep(settings, optuna_distributions(cfg.search_space),
                           Path(cfg.tuner.study_dir), jobs)

    return _sweep


def loss(values: dict[str, str]) -> float:
    return float(values[LR]) * 10 + int(values[EPOCHS])


def stored(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir}/optuna.db")


def test_trials_are_asked_from_the_space_and_told_their_value_and_the_study_resumes(
    sweep: Callable[..., OptunaSweep], capsys: pytest.CaptureFixture[str],
) -> None:
    jobs = Jobs(loss)
    args = ["model.arch=resnet18", "tuner.n_trials=4", "tuner.n_jobs=3"]
    first = sweep(jobs, *args)
    results = first.run(args)

    study = stored(first.sweep_dir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    # n_jobs trials per launch; each job gets the command line, its params and its number.
    assert [len(b) for b in jobs.batches] == [3, 1]
    for trial, job in zip(study.trials, [j for b in jobs.batches for j in b], strict=True):
        assert job[0] == "model.arch=resnet18" and job[-1] == f"tuner.trial={trial.number}"
        assert set(trial.params) == {LR, BATCH, EPOCHS}
        assert trial.value == pytest.approx(loss(dict(o.split("=", 1) for o in job)))
        assert 0.001 <= trial.params[LR] <= 0.1 and 10 <= trial.params[EPOCHS] <= 40

    saved = yaml.safe_load((first.sweep_dir / "optimization_results.yaml").read_text())
    assert saved["best_trial"] == study.best_trial.number == results["best_trial"]
    assert saved["best_value"] == pytest.approx(study.best_value)
    assert saved["best_params"] == study.best_params
    assert saved["n_trials"]["complete"] == 4 and len(saved["trials"]) == 4
    out = capsys.readouterr().out
    assert f"best trial {study.best_trial.number}: val_loss=" in out
    assert "retrain with the best parameters:" in out and saved["retrain"] in out
    # The retrain line: the command line's training overrides, then the best parameters.
    retrain = shlex.split(saved["retrain"])
    assert retrain[:3] == ["python", "scripts/train.py", "model.arch=resnet18"]
    assert retrain[3:] == [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in study.best_params.items()]

    # The same study name again: its trials continue the numbering, the sampler is reseeded.
    again = sweep(Jobs(loss), "model.arch=resnet18", "tuner.n_trials=2")
    again.run(["model.arch=resnet18", "tuner.n_trials=2"])
    study = stored(first.sweep_dir)
    assert [t.number for t in study.trials] == list(range(6))
    assert study.trials[4].params != study.trials[0].params
    saved = yaml.safe_load((first.sweep_dir / "optimization_results.yaml").read_text())
    assert len(saved["trials"]) == 6


def test_pruned_and_failed_jobs_are_recorded_with_their_reason(
    sweep: Callable[..., OptunaSweep],
) -> None:
    def outcome(values: dict[str, str]) -> Any:
        returned = [1.0, Pruned("pruned at epoch 3"), ValueError("batch_size=0"), math.nan,
                    "a string"][int(values["tuner.trial"])]
        if isinstance(returned, Exception):
            raise returned
        return returned

    run = sweep(Jobs(outcome), "tuner.n_trials=5", "tuner.max_failure_rate=1")
    results = run.run([])
    trials = stored(run.sweep_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED] + \
        [TrialState.FAIL] * 3
    assert trials[1].user_attrs["prune_note"] == "pruned at epoch 3"
    assert [t.user_attrs["fail_reason"] for t in trials[2:]] == [
        "ValueError: batch_size=0", "val_loss is nan",
        "the objective returned 'a string', not a number"]
    rows = yaml.safe_load((run.sweep_dir / "optimization_results.yaml").read_text())["trials"]
    assert [(r["state"], r["note"]) for r in rows] == [
        ("COMPLETE", None), ("PRUNED", "pruned at epoch 3"), ("FAIL", "ValueError: batch_size=0"),
        ("FAIL", "val_loss is nan"), ("FAIL", "the objective returned 'a string', not a number")]
    assert results["n_trials"] == {"running": 0, "waiting": 0, "complete": 1, "pruned": 1,
                                   "fail": 3}


def test_more_failures_than_the_budget_stop_the_sweep_after_the_summary(
    sweep: Callable[..., OptunaSweep], capsys: pytest.CaptureFixture[str],
) -> None:
    jobs = Jobs(lambda values: 1 / 0 if int(values["tuner.trial"]) % 2 else 1.0)
    run = sweep(jobs, "tuner.n_trials=8", "tuner.max_failure_rate=0.25")  # 2 failures allowed
    with pytest.raises(TuningError) as err:
        run.run([])
    assert str(err.value) == (
        "3 trials failed, more than tuner.max_failure_rate=0.25 of 8 allows:\n"
        "  trial 1: ZeroDivisionError: division by zero\n"
        "  trial 3: ZeroDivisionError: division by zero\n"
        "  trial 5: ZeroDivisionError: division by zero")
    assert len(stored(run.sweep_dir).trials) == 6  # it stopped there
    # The summary was still written and printed.
    saved = yaml.safe_load((run.sweep_dir / "optimization_results.yaml").read_text())
    assert saved["n_trials"]["fail"] == 3 and saved["best_value"] == 1.0
    assert "optuna trials" in capsys.readouterr().out


def test_no_completed_trial_has_no_best_and_no_retrain_line(
    sweep: Callable[..., OptunaSweep], capsys: pytest.CaptureFixture[str],
) -> None:
    run = sweep(Jobs(lambda values: Pruned("pruned at epoch 0")), "tuner.n_trials=2")
    results = run.run([])
    assert results["best_params"] is None and results["retrain"] is None
    assert "no trial completed: there is no best trial" in capsys.readouterr().out


def test_a_launch_that_raises_leaves_no_trial_running(sweep: Callable[..., OptunaSweep]) -> None:
    def interrupted(values: dict[str, str]) -> Any:
        raise KeyboardInterrupt

    run = sweep(Jobs(interrupted), "tuner.n_trials=2", "tuner.n_jobs=2")
    with pytest.raises(KeyboardInterrupt):
        run.run([])
    trials = stored(run.sweep_dir).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert trials[0].user_attrs["fail_reason"].startswith("not run: KeyboardInterrupt")


def test_a_study_created_for_the_other_direction_is_refused(
    sweep: Callable[..., OptunaSweep],
) -> None:
    run = sweep(Jobs(loss), "tuner.n_trials=1")
    run.sweep_dir.mkdir(parents=True)
    optuna.create_study(study_name=run.settings.study_name, storage=run.settings.storage,
                        direction="maximize")
    with pytest.raises(TuningError, match="objective.direction: study bincount was created to "
                                          "maximize, not minimize"):
        run.run([])


def test_the_command_line_narrows_pins_or_adds_searched_keys() -> None:
    space = {LR: FloatDistribution(0.001, 0.1, log=True),
             BATCH: CategoricalDistribution([32, 64]), EPOCHS: IntDistribution(10, 40)}
    plan = plan_trials(space, [
        "model.arch=resnet18",
        f"{LR}=tag(log, interval(0.01, 0.05))",  # narrowed
        f"{BATCH}=16",                            # pinned: not searched, passed on as typed
        f"{EPOCHS}=range(2, 9, 3)",               # 2, 5, 8
        "model.optimizer.weight_decay=interval(0, 1)",
        "trainer.accumulate_grad_batches=int(interval(1, 4))",
        "data.image_size=32,64",
        "model.optimizer.momentum=choice(0.8, 0.9)",
    ])
    assert plan.distributions == {
        LR: FloatDistribution(0.01, 0.05, log=True),
        EPOCHS: IntDistribution(2, 8, step=3),
        "model.optimizer.weight_decay": FloatDistribution(0.0, 1.0),
        "trainer.accumulate_grad_batches": IntDistribution(1, 4),
        "data.image_size": CategoricalDistribution([32, 64]),
        "model.optimizer.momentum": CategoricalDistribution([0.8, 0.9]),
    }
    assert plan.fixed == ("model.arch=resnet18", f"{BATCH}=16")
    study = optuna.create_study()
    study.ask()
    trial = study.ask(plan.distributions)
    overrides = plan.overrides(trial)
    assert overrides[:2] == ["model.arch=resnet18", f"{BATCH}=16"]
    assert overrides[-1] == "tuner.trial=1"
    assert dict(o.split("=", 1) for o in overrides[2:-1]).keys() == plan.distributions.keys()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"{LR}=tag(log, interval(0, 1))", f"{LR}: a log scale needs low > 0"),
        (f"{LR}=interval(0.5, 0.1)", f"{LR}: low (0.5) must be below high (0.1)"),
        (f"{EPOCHS}=range(5, 1)", f"{EPOCHS}=range(5, 1): the range is empty"),
    ],
)
def test_a_bad_sweep_on_the_command_line_names_it(override: str, message: str) -> None:
    with pytest.raises(SearchSpaceError) as err:
        plan_trials({}, [override])
    assert str(err.value).startswith(message)
