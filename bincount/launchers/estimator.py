"""The SageMaker PyTorch Estimator (SDK v2, script mode) of one training job.

Its entry point is ``scripts/train.py`` of the staged bundle; its metric definitions parse the
``<name>=<float>`` lines the MetricLines callback prints, for the names that callback is
configured with (``callbacks.metric_lines.names``: none when the callback is off).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from bincount.aws import quiet_sdk
from bincount.launchers import container
from bincount.launchers.bundle import ENTRY_POINT
from bincount.launchers.capacity import gpu_count
from bincount.launchers.debugger import debugger_kwargs
from bincount.launchers.settings import LauncherSettings

if TYPE_CHECKING:
    from sagemaker.pytorch import PyTorch
    from sagemaker.session import Session

# How SageMaker reads the ``<name>=<float>`` lines the MetricLines callback prints.
METRIC_REGEX = r"{name}=([-+0-9.eE]+|nan|inf)"


def metric_definitions(names: Sequence[str]) -> list[dict[str, str]]:
    return [{"Name": name, "Regex": METRIC_REGEX.format(name=name)} for name in names]


def metric_names(cfg: DictConfig) -> list[str]:
    """The names the job's MetricLines callback prints (none without the callback)."""
    return list(OmegaConf.select(cfg, "callbacks.metric_lines.names", default=None) or [])


def distribution(settings: LauncherSettings) -> dict[str, Any] | None:
    """torchrun (Lightning DDP in the container) on several instances or a multi-GPU one."""
    if settings.instance_count > 1 or gpu_count(settings.instance_type, settings.region) > 1:
        return {"torch_distributed": {"enabled": True}}
    return None


def build_estimator(
    cfg: DictConfig,
    settings: LauncherSettings,
    hyperparameters: Mapping[str, str],
    source_dir: str,
    base_uri: str,
    job_name: str,
    session: Session,
) -> PyTorch:
    """The PyTorch estimator of one job (all locations under ``<base_uri>/<job_name>/``)."""
    quiet_sdk()
    from sagemaker.debugger import TensorBoardOutputConfig
    from sagemaker.pytorch import PyTorch

    prefix = f"{base_uri}/{job_name}"
    tensorboard = None
    if settings.tensorboard:
        tensorboard = TensorBoardOutputConfig(
            s3_output_path=f"{prefix}/tensorboard",
            container_local_output_path=container.tensorboard_dir(),
        )
    return PyTorch(
        entry_point=ENTRY_POINT,
        source_dir=source_dir,
        role=settings.role,
        instance_type=settings.instance_type,
        instance_count=settings.instance_count,
        volume_size=settings.volume_size,
        framework_version=settings.framework_version,
        py_version=settings.py_version,
        hyperparameters=dict(hyperparameters),
        metric_definitions=metric_definitions(metric_names(cfg)) or None,
        distribution=distribution(settings),
        output_path=base_uri,
        code_location=base_uri,
        checkpoint_s3_uri=settings.checkpoint_s3_uri or f"{prefix}/checkpoints",
        checkpoint_local_path=container.checkpoint_dir(),
        tensorboard_output_config=tensorboard,
        use_spot_instances=settings.spot,
        max_run=settings.max_run,
        max_wait=settings.max_wait,
        keep_alive_period_in_seconds=settings.keep_alive_period,
        tags=[{"Key": k, "Value": v} for k, v in settings.tags.items()] or None,
        base_job_name=settings.base_job_name,
        sagemaker_session=session,
        # SageMaker Debugger rules, hook and profiler when launcher.debugger.enabled, else off.
        **debugger_kwargs(settings.debugger),
    )
