"""Deploy an exported model as a SageMaker PyTorch inference endpoint (SDK v2), or tear one down.

The SDK repacks ``model.tar.gz`` (``deploy.runtime``'s model file + spec) with ``code/`` (the
handlers as ``inference.py``, the ``bincount`` modules they import, ``requirements.txt``, with
``onnxruntime`` for the ONNX runtimes) and uploads it to
``s3://<deploy.bucket>/<deploy.prefix>/<endpoint name>/model.tar.gz``: the layout the PyTorch
inference image expects under ``/opt/ml/model``.
"""

from __future__ import annotations

import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError
from omegaconf import DictConfig

from bincount.aws import make_session, quiet_sdk
from bincount.errors import BincountError, expect_bool
from bincount.models.export import ModelSpec
from bincount.serving.package import ENTRY_POINT, check_model_dir, stage_code, weights_archive
from bincount.serving.runtimes import RUNTIME_ENV, TTA_ENV, choose_runtime
from bincount.serving.settings import DeleteSettings, DeploySettings

if TYPE_CHECKING:
    from sagemaker.session import Session

    from bincount.serving.predictor import ImagePredictor


def endpoint_name_for(spec: ModelSpec, now: datetime | None = None) -> str:
    """``<name>-<version>-<UTC time>``, within SageMaker's endpoint name rules (63 chars)."""
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", f"{spec.name}-{spec.version}").strip("-")[:40]
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{stem or 'bincount'}-{stamp}"


def is_gpu_instance(instance_type: str) -> bool:
    """``ml.g5.xlarge``, ``ml.p4d.24xlarge``: a GPU instance family (g*, p*)."""
    family = instance_type.removeprefix("ml.").split(".", 1)[0]
    return family[:1] in ("g", "p")


def deploy_model(cfg: DictConfig, session: Session | None = None) -> ImagePredictor:
    """Pack, upload and deploy ``cfg.model_dir``; returns a predictor for the new endpoint."""
    settings = DeploySettings.from_cfg(cfg)
    spec = check_model_dir(settings.model_dir)
    session = session or make_session(region=settings.region)
    quiet_sdk()
    from sagemaker.pytorch import PyTorchModel

    from bincount.serving.predictor import ImagePredictor

    name = settings.endpoint_name or endpoint_name_for(spec)
    bucket, prefix = settings.bucket, settings.prefix
    runtime = choose_runtime(settings.model_dir, settings.runtime, key="deploy.runtime",
                             gpu=is_gpu_instance(settings.instance_type))
    print(f"runtime: {runtime}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bincount-deploy-") as tmp:
        archive = weights_archive(settings.model_dir, Path(tmp) / "model.tar.gz", runtime)
        code_dir = stage_code(Path(tmp) / "code", runtime)
        model = PyTorchModel(
            model_data=f"file://{archive}",
            role=settings.role,
            entry_point=ENTRY_POINT,
            source_dir=str(code_dir),
            framework_version=settings.framework_version,
            py_version=settings.py_version,
            code_location=f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            env={**settings.limits.to_env(), RUNTIME_ENV: runtime, TTA_ENV: settings.tta},
            predictor_cls=ImagePredictor,
            name=name,
            sagemaker_session=session,
        )
        predictor = model.deploy(
            initial_instance_count=settings.instance_count,
            instance_type=settings.instance_type,
            endpoint_name=name,
            wait=settings.wait,
            data_capture_config=capture_config(settings, name, session),
        )
    print(how_to_call(name, session.boto_region_name, model.repacked_model_data), flush=True)
    return predictor


def capture_config(settings: DeploySettings, name: str, session: Session) -> Any:
    """``deploy.data_capture=true``: SageMaker's DataCaptureConfig (requests and responses,
    ``deploy.capture_sampling`` percent, to ``deploy.capture_s3_uri``); else None. Its records
    are what ``scripts/monitor.py capture=s3://...`` reads, as it reads a local capture."""
    if not settings.data_capture:
        return None
    from sagemaker.model_monitor import DataCaptureConfig

    prefix = f"{settings.prefix}/" if settings.prefix else ""
    destination = settings.capture_s3_uri or \
        f"s3://{settings.bucket}/{prefix}{name}/datacapture"
    print(f"data capture: {settings.capture_sampling}% of requests to {destination}", flush=True)
    return DataCaptureConfig(
        enable_capture=True, sampling_percentage=settings.capture_sampling,
        destination_s3_uri=destination, capture_options=["REQUEST", "RESPONSE"],
        sagemaker_session=session)


def how_to_call(name: str, region: str, artifact: str | None) -> str:
    return "\n".join(
        [
            f"endpoint: {name} (region {region})",
            f"model artifact: {artifact}",
            "call it:",
            f"  python scripts/predict.py images=[bin.jpg] predict.endpoint={name} "
            f"predict.region={region}",
            f"  aws sagemaker-runtime invoke-endpoint --region {region} --endpoint-name {name} "
            "--content-type image/jpeg --body fileb://bin.jpg out.json",
            f"  ImagePredictor({name!r}).predict(open('bin.jpg', 'rb').read())",
            "tear it down:",
            f"  python scripts/deploy.py deploy.delete=true deploy.endpoint_name={name} "
            f"deploy.region={region}",
        ]
    )


def delete_endpoint(cfg: DictConfig, session: Session | None = None) -> str:
    """Delete the endpoint, its endpoint config and its model."""
    settings = DeleteSettings.from_cfg(cfg)
    session = session or make_session(region=settings.region)
    quiet_sdk()
    from bincount.serving.predictor import ImagePredictor

    predictor = ImagePredictor(settings.endpoint_name, session)
    predictor.delete_model()  # reads the endpoint config, so before the endpoint goes
    predictor.delete_endpoint(delete_endpoint_config=True)
    print(f"deleted endpoint {settings.endpoint_name}, its endpoint config and model", flush=True)
    return settings.endpoint_name


def deploy(cfg: DictConfig) -> object:
    """``scripts/deploy.py``: deploy, or with ``deploy.delete=true`` tear down."""
    delete = expect_bool("deploy.delete", cfg.deploy.delete)
    try:
        return delete_endpoint(cfg) if delete else deploy_model(cfg)
    except (ClientError, NoCredentialsError, NoRegionError) as err:
        raise BincountError(f"AWS refused the request: {err}") from err
