"""The tuner settings bincount owns, checked in one place per backend.

``Objective.from_cfg`` (both backends), ``OptunaSettings.from_cfg`` (``tuner=optuna``) and
``SageMakerTunerSettings.from_cfg`` (``tuner=sagemaker``) turn the composed ``objective`` and
``tuner`` nodes into frozen, typed settings, or stop with a
:class:`~bincount.errors.BincountError` that names the key, its value and what was expected.
The values themselves come from conf/tune.yaml and conf/tuner/*.yaml only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from bincount.errors import BincountError, expect_bool

if TYPE_CHECKING:
    from optuna.pruners import BasePruner

DIRECTIONS = ("minimize", "maximize")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
MAX_TUNING_JOB_NAME = 32  # CreateHyperParameterTuningJob's limit


class TuningError(BincountError):
    """The sweep cannot go on (bad settings, too many failed trials)."""


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TuningError(f"tuner.{key}: expected a positive integer, got {value!r}")
    return value


def _plain(node: Any) -> Any:
    """A config node as plain Python (resolved), for settings that outlive the config."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def pruner_spec(name: str | None, pruners: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The spec ``tuner.pruner`` names among ``tuner.pruners``; None (or "none") -> None."""
    if name is None or str(name).lower() in ("none", "null", ""):
        return None
    if name not in pruners:
        known = ", ".join(sorted(pruners)) or "none configured"
        raise TuningError(f"tuner.pruner: unknown pruner {name!r} (expected one of: {known}, "
                          "or null)")
    return pruners[name]


def build_pruner(name: str | None, pruners: Mapping[str, Any] | DictConfig) -> BasePruner:
    """The pruner ``tuner.pruner`` names among ``tuner.pruners``; none -> never prune."""
    import optuna
    from hydra.utils import instantiate

    spec = pruner_spec(name, _plain(pruners) or {})
    if spec is None:
        return optuna.pruners.NopPruner()
    return instantiate(OmegaConf.create(dict(spec)))


@dataclass(frozen=True)
class Objective:
    """What both backends optimize: ``metric`` as ``train(cfg)`` returns and prints it."""

    metric: str
    direction: str  # minimize | maximize

    @classmethod
    def from_cfg(cls, objective: DictConfig) -> Objective:
        direction = objective.direction
        if direction not in DIRECTIONS:
            raise TuningError(f"objective.direction: expected minimize or maximize, "
                              f"got {direction!r}")
        return cls(metric=str(objective.metric), direction=str(direction))


@dataclass(frozen=True)
class OptunaSettings:
    """``tuner=optuna``: the study, its sampler and pruner, and the sweep's budget."""

    objective: Objective
    study_name: str
    storage: str
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    sampler: Mapping[str, Any]  # an optuna.samplers.* spec (_target_ + arguments)
    pruner: str | None  # a key of ``pruners``, or None: never prune
    pruners: Mapping[str, Any]

    @classmethod
    def from_cfg(cls, tuner: DictConfig, objective: DictConfig) -> OptunaSettings:
        goal = Objective.from_cfg(objective)
        n_trials = _positive_int("n_trials", tuner.n_trials)
        n_jobs = _positive_int("n_jobs", tuner.n_jobs)
        rate = tuner.max_failure_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise TuningError(f"tuner.max_failure_rate: expected 0..1, got {rate!r}")
        if not tuner.storage:
            raise TuningError("tuner.storage: expected an Optuna storage URL "
                              "(sqlite:///..., postgresql://...); trials report through it")
        pruners = _plain(tuner.pruners) or {}
        pruner_spec(tuner.pruner, pruners)  # an unknown name stops here, before any trial
        return cls(
            objective=goal, study_name=str(tuner.study_name), storage=str(tuner.storage),
            n_trials=n_trials, n_jobs=n_jobs, max_failure_rate=float(rate),
            sampler=_plain(tuner.sampler), pruner=tuner.pruner, pruners=pruners,
        )


@dataclass(frozen=True)
class SageMakerTunerSettings:
    """``tuner=sagemaker``: what SageMaker would refuse is refused here with the key to change."""

    objective: Objective
    strategy: str
    max_jobs: int
    max_parallel_jobs: int
    early_stopping: bool
    hyperband_min_resource: int
    hyperband_max_resource: int
    max_runtime: int | None
    random_seed: int | None
    checkpoints: bool
    base_job_name: str
    job_name: str | None
    wait: bool

    @classmethod
    def from_cfg(cls, tuner: DictConfig, objective: DictConfig) -> SageMakerTunerSettings:
        goal = Objective.from_cfg(objective)
        if tuner.strategy not in STRATEGIES:
            raise TuningError(f"tuner.strategy: expected one of {', '.join(STRATEGIES)}, "
                              f"got {tuner.strategy!r}")
        max_jobs = _positive_int("max_jobs", tuner.max_jobs)
        parallel = _positive_int("max_parallel_jobs", tuner.max_parallel_jobs)
        if parallel > max_jobs:
            raise TuningError(f"tuner.max_parallel_jobs: {parallel} is more than "
                              f"tuner.max_jobs ({max_jobs})")
        name = tuner.get("job_name")
        if name is not None and not 1 <= len(str(name)) <= MAX_TUNING_JOB_NAME:
            raise TuningError(f"tuner.job_name: {name!r}: a tuning job name has 1 to "
                              f"{MAX_TUNING_JOB_NAME} characters")
        max_runtime = tuner.get("max_runtime")
        if max_runtime is not None:
            max_runtime = _positive_int("max_runtime", max_runtime)
        hyperband = tuner.hyperband
        low, high = (hyperband.min_resource, hyperband.max_resource)
        if tuner.strategy == "Hyperband":
            low = _positive_int("hyperband.min_resource", low)
            high = _positive_int("hyperband.max_resource", high)
            if low > high:
                raise TuningError(f"tuner.hyperband.min_resource: {low} is more than "
                                  f"tuner.hyperband.max_resource ({high})")
        seed = tuner.get("random_seed")
        return cls(
            objective=goal, strategy=str(tuner.strategy), max_jobs=max_jobs,
            max_parallel_jobs=parallel,
            early_stopping=expect_bool("tuner.early_stopping", tuner.early_stopping),
            hyperband_min_resource=int(low), hyperband_max_resource=int(high),
            max_runtime=max_runtime, random_seed=None if seed is None else int(seed),
            checkpoints=expect_bool("tuner.checkpoints", tuner.checkpoints),
            base_job_name=str(tuner.base_job_name),
            job_name=None if name is None else str(name),
            wait=expect_bool("tuner.wait", tuner.wait),
        )
