"""``launcher=sagemaker``: run ``train(cfg)`` as a SageMaker training job on the same code and
config (SDK v2 PyTorch estimator, script mode).

The job runs ``scripts/train.py`` from a staged source bundle (``bundle``) in the SageMaker
PyTorch training image. The user's Hydra overrides travel as hyperparameters, one per key
(``hyperparameters``), and the container side (``container``) turns them back into the same
overrides. Everything the job writes goes under ``<output_path>/<job name>/``:
``output/model.tar.gz`` (the exported model), ``output/output.tar.gz`` (metrics.json, the resolved
config, the log), ``source/``, ``checkpoints/`` (synced during the run; a spot restart resumes
from ``last.ckpt``) and ``tensorboard/``. With ``launcher.wait`` the launcher streams the job's
log, then brings its model and metrics here (``results``).

Every mistake a user can make in the launcher settings (``settings``, ``capacity``) or the
overrides is reported before anything is uploaded. ``prepare`` is what the SageMaker
HyperparameterTuner wraps too.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from bincount.aws import make_session, quiet_sdk
from bincount.errors import BincountError
from bincount.files import write_json_atomic
from bincount.launchers.bundle import Bundle, container_requirements, source_root, stage_bundle
from bincount.launchers.capacity import check_instance_type, check_quota
from bincount.launchers.debugger import debugger_requirements
from bincount.launchers.estimator import build_estimator
from bincount.launchers.hyperparameters import (
    check_overrides,
    job_overrides,
    task_overrides,
    to_hyperparameters,
)
from bincount.launchers.results import JOB_RECORD, fetch_results
from bincount.launchers.settings import LauncherSettings

if TYPE_CHECKING:
    from sagemaker.pytorch import PyTorch
    from sagemaker.session import Session

log = logging.getLogger(__name__)
NO_CREDENTIALS = ("no AWS credentials: configure them (aws configure, AWS_PROFILE or "
                  "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")


def _quiet() -> None:
    """The SDK v2 notice off; the SDK announces telemetry on every call even when it is off
    (as here), and botocore logs every endpoint it resolves when AWS_ENDPOINT_URL is set."""
    quiet_sdk()
    for name in ("sagemaker.telemetry.telemetry_logging", "botocore.configprovider"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Job:
    """A training job, prepared and (after ``submit``) submitted."""

    estimator: PyTorch
    name: str
    region: str
    inputs: dict[str, str]
    base_uri: str  # <output_path>: everything of the job is under <base_uri>/<name>/
    bundle: Bundle
    hyperparameters: dict[str, str]

    @property
    def prefix(self) -> str:
        return f"{self.base_uri}/{self.name}"

    @property
    def console_url(self) -> str:
        return (f"https://{self.region}.console.aws.amazon.com/sagemaker/home?region="
                f"{self.region}#/jobs/{self.name}")

    def locations(self) -> dict[str, str]:
        return {
            "console": self.console_url,
            "model": f"{self.prefix}/output/model.tar.gz",
            "output": f"{self.prefix}/output/output.tar.gz",
            "checkpoints": str(self.estimator.checkpoint_s3_uri),
            "tensorboard": f"tensorboard --logdir {self.prefix}/tensorboard",
        }


class SageMakerLauncher:
    """Submits training jobs with checked settings (``LauncherSettings.from_cfg``), through
    ``session`` (default: one for the settings' region)."""

    def __init__(self, settings: LauncherSettings, session: Session | None = None) -> None:
        self.settings = settings
        self._session = session

    @classmethod
    def from_cfg(cls, cfg: DictConfig, session: Session | None = None) -> SageMakerLauncher:
        region = session.boto_region_name if session is not None else None
        return cls(LauncherSettings.from_cfg(cfg, region), session)

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = make_session(region=self.settings.region)
        return self._session

    @contextmanager
    def prepare(self, cfg: DictConfig, overrides: Sequence[str],
                job_name: str | None = None) -> Iterator[Job]:
        """Check the overrides and the capacity, stage the bundle and build the estimator of
        the job that trains ``cfg``; the bundle's staging directory lives until the context
        exits (submit, or wrap in a tuner, inside it)."""
        _quiet()
        from botocore.exceptions import NoCredentialsError
        from sagemaker.utils import name_from_base

        settings = self.settings
        root = source_root(cfg)
        overrides = job_overrides(overrides)
        hyperparameters = to_hyperparameters(overrides)
        check_overrides(overrides, root / "conf")
        check_instance_type(settings)
        try:
            check_quota(self.session.boto_session, settings)
            base_uri = settings.output_path or (
                f"s3://{self.session.default_bucket()}/{settings.default_prefix}".rstrip("/"))
        except NoCredentialsError as err:
            raise BincountError(NO_CREDENTIALS) from err
        name = job_name or settings.job_name or name_from_base(settings.base_job_name)
        requirements = None
        if settings.install_requirements:
            requirements = container_requirements(settings.requirements_exclude)
            requirements += debugger_requirements(settings.debugger)
        with tempfile.TemporaryDirectory(prefix="bincount-bundle-") as tmp:
            bundle = stage_bundle(Path(tmp) / "source", requirements, root)
            estimator = build_estimator(cfg, settings, hyperparameters, str(bundle.root),
                                        base_uri, name, self.session)
            yield Job(estimator=estimator, name=name, region=settings.region,
                      inputs=settings.inputs, base_uri=base_uri, bundle=bundle,
                      hyperparameters=hyperparameters)

    def submit(self, cfg: DictConfig, overrides: Sequence[str]) -> Job:
        """Stage, upload and start the job; returns at once."""
        from botocore.exceptions import ClientError, NoCredentialsError

        with self.prepare(cfg, overrides) as job:
            print(f"{job.bundle.describe()} -> {job.prefix}/source/sourcedir.tar.gz", flush=True)
            try:
                job.estimator.fit(job.inputs or None, job_name=job.name, wait=False)
            except NoCredentialsError as err:
                raise BincountError(NO_CREDENTIALS) from err
            except ClientError as err:
                raise BincountError(f"SageMaker refused the training job: {err}") from err
        print(f"SageMaker training job: {job.name}", flush=True)
        for what, where in job.locations().items():
            print(f"  {what}: {where}", flush=True)
        return job

    def run(self, cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
        """Submit the job that trains ``cfg``; with ``wait``, follow it to the end and bring its
        model and metrics to ``paths.model_dir`` and ``paths.output_dir``."""
        job = self.submit(cfg, overrides)
        result: dict[str, Any] = {"job_name": job.name, **job.locations()}
        # where the job is, for later (aws sagemaker describe-training-job, the console)
        write_json_atomic(Path(cfg.paths.output_dir) / JOB_RECORD, result)
        if self.settings.wait:
            result.update(follow(job.name, self.session, Path(cfg.paths.output_dir),
                                 Path(cfg.paths.model_dir), logs=self.settings.logs))
        return result


def follow(job_name: str, session: Session, output_dir: Path, model_dir: Path,
           logs: bool = True, poll: int = 10) -> dict[str, Any]:
    """Wait for the job (streaming its logs), then unpack its model into ``model_dir`` and its
    output (metrics.json, resolved config, log) into ``<output_dir>/job``; print the metrics."""
    _quiet()
    from sagemaker.exceptions import UnexpectedStatusException

    try:
        if logs:
            session.logs_for_job(job_name, wait=True, poll=poll)
        else:
            session.wait_for_job(job_name, poll=poll)
    except UnexpectedStatusException as err:
        raise BincountError(f"training job {job_name} did not complete: {err}") from err
    desc = session.sagemaker_client.describe_training_job(TrainingJobName=job_name)
    if desc["TrainingJobStatus"] != "Completed":
        raise BincountError(f"training job {job_name} ended {desc['TrainingJobStatus']}: "
                            f"{desc.get('FailureReason', 'no reason given')}")
    return fetch_results(desc, session.boto_session.client("s3"), output_dir, model_dir)


@contextmanager
def prepare(cfg: DictConfig, overrides: Sequence[str], session: Session | None = None,
            job_name: str | None = None) -> Iterator[Job]:
    """``SageMakerLauncher.prepare`` with the settings of ``cfg.launcher``."""
    with SageMakerLauncher.from_cfg(cfg, session).prepare(cfg, overrides, job_name) as job:
        yield job


def submit(cfg: DictConfig, overrides: Sequence[str], session: Session | None = None) -> Job:
    """``SageMakerLauncher.submit`` with the settings of ``cfg.launcher``."""
    return SageMakerLauncher.from_cfg(cfg, session).submit(cfg, overrides)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """What ``scripts/train.py launcher=sagemaker ...`` does: submit a job that trains ``cfg``
    (the command line's overrides travel with it) and, with ``launcher.wait``, follow it."""
    return SageMakerLauncher.from_cfg(cfg).run(cfg, task_overrides())
