"""``tuner=sagemaker``: a SageMaker HyperparameterTuner (SDK v2) over the estimator the SageMaker
launcher builds, searching the same ``search_space`` for the same objective.

Each training job of the tuning job is the launcher's job with the searched keys as extra
hyperparameters (``model.optimizer.lr``, ...), which the container turns back into Hydra
overrides; the objective is parsed from the ``val_loss=<float>`` lines by the launcher's metric
definitions (the last line a job prints is its best validation loss).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from bincount.aws import quiet_sdk
from bincount.errors import BincountError
from bincount.launchers.sagemaker import Job, prepare
from bincount.tuning.results import RESULTS, report, retrain_command, training_overrides
from bincount.tuning.search_space import parse_space, sagemaker_ranges
from bincount.tuning.settings import MAX_TUNING_JOB_NAME, SageMakerTunerSettings

if TYPE_CHECKING:
    from sagemaker.session import Session
    from sagemaker.tuner import HyperparameterTuner

log = logging.getLogger(__name__)


def tuning_job_name(base: str) -> str:
    """``<base>-<UTC yymmdd-HHMMSS>-<4 hex>``, at most 32 characters: unique even for two
    tuning jobs started in the same second (the SDK's short names are per minute)."""
    suffix = f"{datetime.now(timezone.utc):%y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    return f"{base[:MAX_TUNING_JOB_NAME - len(suffix) - 1]}-{suffix}"


def build_tuner(settings: SageMakerTunerSettings, search_space: DictConfig,
                job: Job) -> HyperparameterTuner:
    """The tuner over the launcher's estimator: one search space, one objective, the same
    metric definitions."""
    quiet_sdk()
    from sagemaker.tuner import HyperbandStrategyConfig, HyperparameterTuner, StrategyConfig

    hyperband = settings.strategy == "Hyperband"
    if hyperband and settings.early_stopping:
        log.info("tuner.strategy=Hyperband stops jobs itself: SageMaker's early stopping is off")
    strategy_config = None
    if hyperband:
        strategy_config = StrategyConfig(HyperbandStrategyConfig(
            max_resource=settings.hyperband_max_resource,
            min_resource=settings.hyperband_min_resource,
        ))
    if not settings.checkpoints:
        # The jobs of one tuning job would share the launcher's checkpoint prefix, and each
        # would resume from the last.ckpt another left there.
        job.estimator.checkpoint_s3_uri = None
        job.estimator.checkpoint_local_path = None
    return HyperparameterTuner(
        estimator=job.estimator,
        objective_metric_name=settings.objective.metric,
        objective_type="Minimize" if settings.objective.direction == "minimize" else "Maximize",
        hyperparameter_ranges=sagemaker_ranges(search_space),
        metric_definitions=job.estimator.metric_definitions,
        strategy=settings.strategy,
        strategy_config=strategy_config,
        max_jobs=settings.max_jobs,
        max_parallel_jobs=settings.max_parallel_jobs,
        max_runtime_in_seconds=settings.max_runtime,
        early_stopping_type="Auto" if settings.early_stopping and not hyperband else "Off",
        random_seed=settings.random_seed,
        base_tuning_job_name=settings.base_job_name,
    )


def launch_tuning(cfg: DictConfig, overrides: Sequence[str],
                  session: Session | None = None) -> dict[str, Any]:
    """Start the tuning job; with ``tuner.wait``, wait for it and report the best job."""
    settings = SageMakerTunerSettings.from_cfg(cfg.tuner, cfg.objective)
    parse_space(cfg.search_space)  # a malformed space stops here, before anything is uploaded
    name = settings.job_name or tuning_job_name(settings.base_job_name)
    training = training_overrides(overrides)
    with prepare(cfg, training, session, job_name=name) as job:
        tuner = build_tuner(settings, cfg.search_space, job)
        print(f"{job.bundle.describe()} -> {job.prefix}/source/sourcedir.tar.gz", flush=True)
        from botocore.exceptions import ClientError

        try:
            tuner.fit(job.inputs or None, job_name=name, include_cls_metadata=False, wait=False)
        except ClientError as err:
            raise BincountError(f"SageMaker refused the tuning job: {err}") from err
    console = (f"https://{job.region}.console.aws.amazon.com/sagemaker/home?region={job.region}"
               f"#/hyper-tuning-jobs/{name}")
    print(f"SageMaker tuning job: {name}\n  console: {console}", flush=True)
    results: dict[str, Any] = {
        "name": "sagemaker", "tuning_job": name, "console": console,
        "metric": settings.objective.metric, "direction": settings.objective.direction,
        "output": f"{job.base_uri}/<training job name>/output/model.tar.gz",
    }
    if not settings.wait:
        print(f"not waiting (tuner.wait=false); follow it with: aws sagemaker "
              f"describe-hyper-parameter-tuning-job --hyper-parameter-tuning-job-name {name}",
              flush=True)
        return results
    tuner.wait()
    desc = tuner.describe()
    results.update(best_of(desc, [p.key for p in parse_space(cfg.search_space)]))
    if results.get("best_params"):
        results["retrain"] = retrain_command(
            ["launcher=sagemaker", *training], results["best_params"])
    return results


def best_of(desc: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Status, job counts and the best training job of a DescribeHyperParameterTuningJob reply."""
    out: dict[str, Any] = {
        "status": desc.get("HyperParameterTuningJobStatus"),
        "training_jobs": dict(desc.get("TrainingJobStatusCounters") or {}),
        "best_training_job": None, "best_value": None, "best_params": None,
    }
    best = desc.get("BestTrainingJob")
    if best:
        tuned = {k: _decode(v) for k, v in (best.get("TunedHyperParameters") or {}).items()}
        out.update(
            best_training_job=best.get("TrainingJobName"),
            best_value=(best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value"),
            # The searched keys first, in the search space's order; anything else after.
            best_params={**{k: tuned[k] for k in keys if k in tuned},
                         **{k: v for k, v in tuned.items() if k not in keys}},
        )
    if desc.get("FailureReason"):
        out["failure_reason"] = desc["FailureReason"]
    return out


def _decode(value: str) -> Any:
    """Tuned values come back as sent: categorical ones JSON-encoded (``'"64"'``)."""
    try:
        value = json.loads(value)
    except (TypeError, ValueError):
        return value
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def run_sweep(config: DictConfig, arguments: Sequence[str]) -> dict[str, Any]:
    """What ``scripts/tune.py -m tuner=sagemaker`` does: one tuning job, its results in
    ``<sweep dir>/optimization_results.yaml``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeps = [o.input_line for o in OverridesParser.create().parse_overrides(list(arguments))
              if o.is_sweep_override()]
    if sweeps:
        raise BincountError(f"{sweeps[0]}: tuner=sagemaker searches search_space; set ranges "
                            "there (e.g. search_space.lr.high=0.05), not as sweeps")
    results = launch_tuning(config, arguments)
    report(results, [], [], Path(str(config.hydra.sweep.dir)) / RESULTS)
    return results
