"""AWS for tests: fake credentials, moto in-process with one bucket, a SageMaker session whose
requests are recorded as sent (botocore event hooks), and the launcher settings of a test job."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from omegaconf import DictConfig, OmegaConf

from bincount.aws import make_session
from tests.support.paths import ROOT

REGION = "us-east-1"
BUCKET = "bincount-jobs"
ROLE = "arn:aws:iam::123456789012:role/bincount-sagemaker"
OUTPUT = f"s3://{BUCKET}/runs"
TRAIN = f"s3://{BUCKET}/abid"


def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "SAGEMAKER_ROLE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@contextmanager
def moto_bucket(monkeypatch: pytest.MonkeyPatch, bucket: str = BUCKET) -> Iterator[Any]:
    """moto in-process, fake credentials and one bucket: yields that bucket's S3 client."""
    with mock_aws():
        fake_credentials(monkeypatch)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=bucket)
        yield s3


def reset_moto(url: str) -> None:
    """moto's server in this process shares the backends of earlier tests: start empty."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))


def recording_session(region: str = REGION) -> tuple[Any, dict[str, dict]]:
    """A SageMaker session (telemetry off) and the JSON body of every SageMaker request it sends,
    by operation name (the last one of each)."""
    boto_session = boto3.Session(region_name=region)
    sent: dict[str, dict] = {}

    def record(params: dict, model: Any, **_: Any) -> None:
        sent[model.name] = json.loads(params["body"] or b"{}")

    boto_session.events.register("before-call.sagemaker", record)
    return make_session(boto_session=boto_session), sent


def launch_overrides(*settings: str) -> list[str]:
    """``launcher=sagemaker`` with the test job's role, data and output path, from this
    checkout (the job's source comes from ``paths.root_dir``), not waiting."""
    return [f"paths.root_dir={ROOT}", "launcher=sagemaker", f"launcher.role={ROLE}",
            f"launcher.output_path={OUTPUT}", f"launcher.inputs.train={TRAIN}",
            "launcher.wait=false", *settings]


def launch_cfg(make_cfg: Callable[..., DictConfig], overrides: list[str], *settings: str
               ) -> DictConfig:
    """The config scripts/train.py composes for ``launcher=sagemaker <settings> <overrides>``."""
    return make_cfg(*launch_overrides(*settings), *overrides, tiny=False)


def with_settings(cfg: DictConfig, *dotlist: str) -> DictConfig:
    """``cfg`` with ``key=value`` settings merged in (values parsed as YAML, as on the command
    line, new keys allowed): one composed config serves many cases."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.merge_with_dotlist(list(dotlist))
    return cfg


def decoded(hyperparameters: dict[str, str]) -> dict[str, Any]:
    """As the training toolkit reads them: each value JSON-decoded where it parses."""
    out = {}
    for key, value in hyperparameters.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def hook_config(path: Path, out_dir: Path) -> Path:
    """A debughookconfig.json as SageMaker writes it for a job with a DebuggerHookConfig."""
    path.write_text(json.dumps({
        "LocalPath": str(out_dir),
        "HookParameters": {"save_interval": "1"},
        "CollectionConfigurations": [
            {"CollectionName": "losses", "CollectionParameters": {"save_interval": "1"}},
            {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "2"}},
        ],
    }))
    return path
