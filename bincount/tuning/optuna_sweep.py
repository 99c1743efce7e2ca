"""``tuner=optuna``: the sweep over Optuna's ask/tell API.

A persistent study (any Optuna storage; the same ``tuner.study_name`` continues it, its sampler
reseeded past the trials it holds), ``tuner.n_jobs`` trials asked per launch, each job's outcome
told back: COMPLETE with its value, PRUNED (the job returned :class:`Pruned`),
or FAIL with the reason; the sweep stops once more trials failed than ``tuner.max_failure_rate``
allows, and always ends with the results summary. Launching is the caller's: the Hydra plugin
(:mod:`hydra_plugins.bincount_sweepers.sweepers`) hands in its launcher.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from bincount.overrides import override_key
from bincount.tuning.results import RESULTS, report, retrain_command
from bincount.tuning.search_space import SearchSpaceError, sweep_distribution
from bincount.tuning.settings import OptunaSettings, TuningError, build_pruner

log = logging.getLogger(__name__)

REASON = "fail_reason"  # user attribute holding a failed trial's reason
PRUNED_NOTE = "prune_note"
# A value written as is in an override; anything else is quoted.
PLAIN = re.compile(r"^[\w.:/-]+$")

Launch = Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]]


@dataclass(frozen=True)
class Pruned:
    """What a pruned trial's job returns (not an exception: the launcher would report it as a
    failed job)."""

    reason: str


@dataclass(frozen=True)
class TrialPlan:
    """What every trial gets: the searched keys' distributions, and the command line's other
    overrides, passed on as typed."""

    distributions: dict[str, BaseDistribution]
    fixed: tuple[str, ...]

    def overrides(self, trial: optuna.Trial) -> list[str]:
        """The job's command line: the fixed overrides, the trial's params, its number."""
        params = [f"{key}={_override_value(value)}" for key, value in trial.params.items()]
        # The job finds its trial (for pruning) and its folder (trial_<n>) by this number.
        return [*self.fixed, *params, f"tuner.trial={trial.number}"]


def plan_trials(space: Mapping[str, BaseDistribution], arguments: Sequence[str]) -> TrialPlan:
    """The search space with the command line applied: a sweep (``key=interval(a, b)``,
    ``key=choice(...)``, ``key=a,b``, ``key=range(...)``) searches ``key`` over that; a plain
    override of a searched key pins it."""
    distributions = dict(space)
    fixed: dict[str, str] = {}
    try:
        parsed = OverridesParser.create().parse_overrides(list(arguments))
    except HydraException as err:
        raise TuningError(f"override: {err}") from err
    for override in parsed:
        line = str(override.input_line)
        key = override_key(line)
        if override.is_sweep_override():
            try:
                distributions[key] = sweep_distribution(override)
            except (ValueError, TypeError) as err:  # Optuna's own checks of a distribution
                raise SearchSpaceError(f"{line}: {err}") from err
            fixed.pop(key, None)
        else:
            fixed[key] = line
            distributions.pop(key, None)
    return TrialPlan(distributions, tuple(fixed.values()))


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if isinstance(value, str) and not PLAIN.match(text):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


class OptunaSweep:
    """Runs ``settings.n_trials`` trials on a persistent study, launching them through
    ``launch(batch, initial_job_idx)``; the summary goes to ``sweep_dir``."""

    def __init__(self, settings: OptunaSettings, space: Mapping[str, BaseDistribution],
                 sweep_dir: Path, launch: Launch) -> None:
        self.settings = settings
        self.space = dict(space)
        self.sweep_dir = sweep_dir
        self.launch = launch
        self.job_idx = 0

    def run(self, arguments: Sequence[str]) -> dict[str, Any]:
        """The sweep of one ``scripts/tune.py -m`` command; ``arguments`` are its overrides."""
        plan = plan_trials(self.space, arguments)
        study = self.open_study()
        try:
            self._run(study, plan)
        finally:  # also when too many trials failed: the table shows why
            results = self.summarize(study, plan, arguments)
        return results

    def sampler(self, trials_so_far: int) -> optuna.samplers.BaseSampler:
        """A resumed study gets its sampler seeded past the trials it holds: the same seed again
        would draw the same random start-up points as the first run did."""
        spec = dict(self.settings.sampler)
        if trials_so_far and spec.get("seed") is not None:
            spec["seed"] = int(spec["seed"]) + trials_so_far
        return instantiate(OmegaConf.create(spec))

    def open_study(self) -> optuna.Study:
        s = self.settings
        if s.storage.startswith("sqlite:///"):  # SQLite creates the file, not its folder
            Path(s.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            existing = (
                len(optuna.load_study(study_name=s.study_name, storage=s.storage).trials)
                if s.study_name in optuna.study.get_all_study_names(s.storage) else 0
            )
            study = optuna.create_study(
                study_name=s.study_name, storage=s.storage, sampler=self.sampler(existing),
                pruner=build_pruner(s.pruner, s.pruners), direction=s.objective.direction,
                load_if_exists=True,
            )
        except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as err:
            raise TuningError(f"tuner.storage: cannot open {s.storage}: {err}") from err
        if study.direction.name.lower() != s.objective.direction:
            raise TuningError(f"objective.direction: study {s.study_name} was created to "
                              f"{study.direction.name.lower()}, not {s.objective.direction}")
        log.info("study %s (%s): %d trials so far, %d to run", s.study_name, s.storage,
                 len(study.trials), s.n_trials)
        return study

    def _run(self, study: optuna.Study, plan: TrialPlan) -> None:
        s = self.settings
        budget = math.floor(s.max_failure_rate * s.n_trials)
        failures: list[str] = []
        to_go = s.n_trials
        while to_go > 0:
            trials = [study.ask(plan.distributions) for _ in range(min(to_go, s.n_jobs))]
            batch = [plan.overrides(trial) for trial in trials]
            try:
                returns = self.launch(batch, self.job_idx)
            except BaseException as err:  # the study must not keep them RUNNING forever
                for trial in trials:
                    self._tell(study, trial, TrialState.FAIL, None,
                               f"not run: {type(err).__name__}: {err}")
                raise
            self.job_idx += len(returns)
            for trial, ret in zip(trials, returns, strict=True):
                state, value, note = self.outcome(ret)
                self._tell(study, trial, state, value, note)
                if state == TrialState.FAIL:
                    failures.append(f"trial {trial.number}: {note}")
                    log.warning("trial %d failed: %s", trial.number, note)
                elif state == TrialState.PRUNED:
                    log.info("trial %d pruned: %s", trial.number, note)
            if len(failures) > budget:
                raise TuningError(
                    f"{len(failures)} trials failed, more than tuner.max_failure_rate="
                    f"{s.max_failure_rate} of {s.n_trials} allows:\n  " + "\n  ".join(failures)
                )
            to_go -= len(trials)

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState,
              value: float | None, note: str | None) -> None:
        if note:
            trial.set_user_attr(REASON if state == TrialState.FAIL else PRUNED_NOTE, note)
        study.tell(trial, state=state, values=None if value is None else [value])

    def outcome(self, ret: JobReturn) -> tuple[TrialState, float | None, str | None]:
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
            return TrialState.FAIL, None, f"{self.settings.objective.metric} is {value}"
        return TrialState.COMPLETE, value, None

    def summarize(self, study: optuna.Study, plan: TrialPlan,
                  arguments: Sequence[str]) -> dict[str, Any]:
        """Print the table and the best trial; write ``optimization_results.yaml``."""
        s = self.settings
        trials = study.get_trials(deepcopy=False)
        rows = [_row(t) for t in trials]
        keys = list(plan.distributions)
        keys += sorted({k for t in trials for k in t.params} - set(keys))
        results: dict[str, Any] = {
            "name": "optuna", "study_name": study.study_name, "storage": s.storage,
            "metric": s.objective.metric, "direction": s.objective.direction,
            "n_trials": {st.name.lower(): sum(t.state == st for t in trials) for st in TrialState},
            "best_trial": None, "best_value": None, "best_params": None, "retrain": None,
            "tensorboard": f"tensorboard --logdir {self.sweep_dir}",
            "dashboard": f"optuna-dashboard {s.storage}",
        }
        if any(t.state == TrialState.COMPLETE for t in trials):
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value,
                           best_params=dict(best.params),
                           retrain=retrain_command([str(a) for a in arguments], best.params))
        report(results, rows, keys, self.sweep_dir / RESULTS)
        return results


def _row(trial: FrozenTrial) -> dict[str, Any]:
    steps = trial.intermediate_values
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "params": dict(trial.params),
        "epochs": (max(steps) + 1) if steps else None,
        "note": trial.user_attrs.get(REASON) or trial.user_attrs.get(PRUNED_NOTE),
    }
