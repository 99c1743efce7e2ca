"""Hydra's Optuna sweeper with what the project needs on top: the search space from config,
a pruner, pruned and failed trials recorded as such (with the failure's reason), a failure budget
over the whole sweep, and a results summary.
Loaded by :class:`hydra_plugins.bincount_sweepers.sweepers.OptunaTrialSweeper`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from bincount.errors import BincountError
from bincount.tuning.objective import Pruned
from bincount.tuning.pruning import build_pruner
from bincount.tuning.results import RESULTS, report, retrain_command
from bincount.tuning.search_space import optuna_params
from hydra_plugins.bincount_sweepers.sweepers import user_errors

log = logging.getLogger(__name__)

REASON = "fail_reason"  # user attribute holding a failed trial's reason
PRUNED_NOTE = "prune_note"


class TuningError(BincountError):
    """The sweep cannot go on (bad settings, too many failed trials)."""


class OptunaTrialSweeperImpl(OptunaSweeperImpl):
    """Runs ``tuner.n_trials`` trials (``tuner.n_jobs`` per launch) on a persistent study."""

    def __init__(self, search_space: DictConfig, objective: DictConfig, tuner: DictConfig) -> None:
        with user_errors():
            self.metric = str(objective.metric)
            self.direction_name = str(objective.direction)
            if self.direction_name not in ("minimize", "maximize"):
                raise TuningError(f"objective.direction: expected minimize or maximize, "
                                  f"got {self.direction_name!r}")
            for key in ("n_trials", "n_jobs"):
                if not isinstance(tuner[key], int) or tuner[key] < 1:
                    raise TuningError(f"tuner.{key}: expected a positive integer, "
                                      f"got {tuner[key]!r}")
            rate = tuner.max_failure_rate
            if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
                raise TuningError(f"tuner.max_failure_rate: expected 0..1, got {rate!r}")
            if not tuner.storage:
                raise TuningError("tuner.storage: expected an Optuna storage URL "
                                  "(sqlite:///..., postgresql://...); trials report through it")
            self.sampler_cfg = tuner.sampler
            sampler = self._sampler(0)
            self.pruner = build_pruner(tuner.pruner, tuner.pruners)
            super().__init__(
                sampler=sampler,
                direction=self.direction_name,
                storage=str(tuner.storage),
                study_name=str(tuner.study_name),
                n_trials=int(tuner.n_trials),
                n_jobs=int(tuner.n_jobs),
                max_failure_rate=float(rate),
                custom_search_space=None,
                params=OmegaConf.create(optuna_params(search_space)),
            )

    def _sampler(self, trials_so_far: int) -> optuna.samplers.BaseSampler:
        """A resumed study gets its sampler seeded past the trials it holds: the same seed again
        would draw the same random start-up points as the first run did."""
        kwargs = {}
        if trials_so_far and self.sampler_cfg.get("seed") is not None:
            kwargs["seed"] = int(self.sampler_cfg.seed) + trials_so_far
        return instantiate(self.sampler_cfg, _execution_whitelist_=["optuna.samplers.*"], **kwargs)

    def sweep(self, arguments: list[str]) -> None:
        with user_errors():
            study = self._study()
            try:
                self._run(study, arguments)
            finally:  # also when too many trials failed: the table shows why
                self._summarize(study)

    def _study(self) -> optuna.Study:
        if self.storage.startswith("sqlite:///"):  # SQLite creates the file, not its folder
            Path(self.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            existing = (
                len(optuna.load_study(study_name=self.study_name, storage=self.storage).trials)
                if self.study_name in optuna.study.get_all_study_names(self.storage) else 0
            )
            self.sampler = self._sampler(existing)
            study = optuna.create_study(
                study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                pruner=self.pruner, direction=self.direction_name, load_if_exists=True,
            )
        except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as err:
            raise TuningError(f"tuner.storage: cannot open {self.storage}: {err}") from err
        if study.direction.name.lower() != self.direction_name:
            raise TuningError(f"objective.direction: study {self.study_name} was created to "
                              f"{study.direction.name.lower()}, not {self.direction_name}")
        done = len(study.trials)
        log.info("study %s (%s): %d trials so far, %d to run", self.study_name, self.storage,
                 done, self.n_trials)
        return study

    def _run(self, study: optuna.Study, arguments: list[str]) -> None:
        distributions, fixed, fixed_overrides = create_params_from_overrides(
            self._parse_sweeper_params_config() + list(arguments)
        )
        for key in fixed:  # a plain override on the command line pins a searched key
            distributions.pop(key, None)
        budget = math.floor(self.max_failure_rate * self.n_trials)
        failures: list[str] = []
        to_go = self.n_trials
        while to_go > 0:
            trials = [study.ask() for _ in range(min(to_go, self.n_jobs))]
            batch = self._configure_trials(trials, distributions, fixed, fixed_overrides)
            # The job finds its trial (for pruning) and its folder (trial_<n>) by this number.
            batch = [(*overrides, f"tuner.trial={trial.number}")
                     for overrides, trial in zip(batch, trials, strict=True)]
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for trial, ret in zip(trials, returns, strict=True):
                state, value, note = self._outcome(ret)
                if note:
                    trial.set_user_attr(REASON if state == TrialState.FAIL else PRUNED_NOTE, note)
                study.tell(trial, state=state, values=None if value is None else [value])
                if state == TrialState.FAIL:
                    failures.append(f"trial {trial.number}: {note}")
                    log.warning("trial %d failed: %s", trial.number, note)
                elif state == TrialState.PRUNED:
                    log.info("trial %d pruned: %s", trial.number, note)
            if len(failures) > budget:
                raise TuningError(
                    f"{len(failures)} trials failed, more than tuner.max_failure_rate="
                    f"{self.max_failure_rate} of {self.n_trials} allows:\n  "
                    + "\n  ".join(failures)
                )
            to_go -= len(trials)

    def _outcome(self, ret: JobReturn) -> tuple[TrialState, float | None, str | None]:
        """(state, value, note) of one finished job."""
        if ret.status != JobStatus.COMPLETED:
            try:
                ret.return_value  # noqa: B018 -- re-raises the job's exception
            except Exception as err:  # the job's own failure, whatever it was
                return TrialState.FAIL, None, f"{type(err).__name__}: {err}"
            return TrialState.FAIL, None, "the job did not complete"
        value = ret.return_value
        if isinstance(value, Pruned):
            return TrialState.PRUNED, None, value.reason
        try:
            value = float(value)
        except (TypeError, ValueError):
            return TrialState.FAIL, None, f"the objective returned {value!r}, not a number"
        if not math.isfinite(value):
            return TrialState.FAIL, None, f"{self.metric} is {value}"
        return TrialState.COMPLETE, value, None

    def _summarize(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        rows = [_row(t) for t in trials]
        keys = list(self.params or {})
        results: dict[str, Any] = {
            "name": "optuna", "study_name": study.study_name, "storage": self.storage,
            "metric": self.metric, "direction": self.direction_name,
            "n_trials": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
            "best_trial": None, "best_value": None, "best_params": None, "retrain": None,
            "tensorboard": f"tensorboard --logdir {self.config.hydra.sweep.dir}",
            "dashboard": f"optuna-dashboard {self.storage}",
        }
        if any(t.state == TrialState.COMPLETE for t in trials):
            best = study.best_trial
            task = OmegaConf.to_container(self.config.hydra.overrides.task)
            results.update(best_trial=best.number, best_value=best.value,
                           best_params=dict(best.params),
                           retrain=retrain_command(_as_strings(task), best.params))
        report(results, rows, keys, Path(self.config.hydra.sweep.dir) / RESULTS)


def _as_strings(items: Any) -> Sequence[str]:
    return [str(i) for i in items]


def _row(trial: FrozenTrial) -> dict[str, Any]:
    steps = trial.intermediate_values
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value if trial.state != TrialState.FAIL else None,
        "params": dict(trial.params),
        "epochs": (max(steps) + 1) if steps else None,
        "note": trial.user_attrs.get(REASON) or trial.user_attrs.get(PRUNED_NOTE),
    }
