"""``scripts/deploy.py``'s work under moto (in this process): the SageMaker requests it makes,
the model.tar.gz it uploads (the layout the PyTorch inference image expects, and no test or
benchmark code), the teardown, and the errors a user can cause."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from botocore.exceptions import ClientError
from moto import mock_aws
from omegaconf import DictConfig

from bincount.aws import make_session
from bincount.errors import BincountError
from bincount.serving import ImagePredictor, handlers
from bincount.serving.deploy import delete_endpoint, deploy, deploy_model
from tests.support.serving import assert_runtime_only

REGION = "us-east-1"
BUCKET = "bincount-test-models"
ROLE = "arn:aws:iam::123456789012:role/bincount-sagemaker"
ENDPOINT = "bincount-test-endpoint"
CALLS = ("CreateModel", "CreateEndpointConfig", "CreateEndpoint")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in this process, fake credentials and the bucket for model.tar.gz."""
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield


@pytest.fixture
def captured_session() -> tuple[Any, dict[str, dict]]:
    """A SageMaker session whose CreateModel/CreateEndpointConfig/CreateEndpoint requests are
    recorded as sent (the JSON bodies), through botocore's event hooks."""
    boto_session = boto3.Session(region_name=REGION)
    requests: dict[str, dict] = {}

    def recorder(name: str) -> Callable[..., None]:
        def record(params: dict, **_: Any) -> None:
            requests[name] = json.loads(params["body"])

        return record

    for name in CALLS:
        boto_session.events.register(f"before-call.sagemaker.{name}", recorder(name))
    return make_session(boto_session=boto_session), requests


def deploy_cfg(make_cfg: Callable[..., DictConfig], *overrides: str) -> DictConfig:
    return make_cfg(
        f"deploy.role={ROLE}", f"deploy.bucket={BUCKET}", f"deploy.region={REGION}",
        f"deploy.endpoint_name={ENDPOINT}", "deploy.wait=false", *overrides,
        name="deploy", tiny=False,
    )


# The SDK validates its defaults config (here: telemetry off) against its JSON schema on every
# lookup, about 0.3 s each, some 25 times per deploy: hence slow.
@pytest.mark.slow
def test_deploy_uploads_the_artifact_creates_the_endpoint_and_delete_removes_it(
    aws: None,
    captured_session: tuple[Any, dict[str, dict]],
    model_dir: Path,
    make_cfg: Callable[..., DictConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    session, sent = captured_session
    cfg = deploy_cfg(make_cfg, f"model_dir={model_dir}", "limits.max_request_bytes=123456",
                     "deploy.runtime=torch", "tta=hflip")

    predictor = deploy_model(cfg, session)

    assert isinstance(predictor, ImagePredictor)
    assert predictor.endpoint_name == ENDPOINT
    assert set(sent) == set(CALLS)
    model = sent["CreateModel"]
    container = model["PrimaryContainer"]
    artifact = f"s3://{BUCKET}/bincount/endpoints/{ENDPOINT}/model.tar.gz"
    assert model["ModelName"] == ENDPOINT
    assert model["ExecutionRoleArn"] == ROLE
    assert container["Image"].endswith("/pytorch-inference:2.6.0-cpu-py312")
    assert container["ModelDataUrl"] == artifact
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert container["Environment"][handlers.MAX_REQUEST_BYTES_ENV] == "123456"
    assert container["Environment"][handlers.MAX_IMAGE_PIXELS_ENV] == "40000000"
    assert container["Environment"]["BINCOUNT_RUNTIME"] == "torch"
    assert container["Environment"]["BINCOUNT_TTA"] == "hflip"
    (variant,) = sent["CreateEndpointConfig"]["ProductionVariants"]
    assert variant["ModelName"] == ENDPOINT
    assert variant["InstanceType"] == "ml.m5.large"
    assert variant["InitialInstanceCount"] == 1
    assert sent["CreateEndpoint"]["EndpointName"] == ENDPOINT
    assert sent["CreateEndpoint"]["EndpointConfigName"] == sent["CreateEndpointConfig"][
        "EndpointConfigName"
    ]

    out = capsys.readouterr().out
    assert f"predict.endpoint={ENDPOINT}" in out
    assert f"deploy.delete=true deploy.endpoint_name={ENDPOINT}" in out

    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=BUCKET, Key=artifact.split(f"{BUCKET}/", 1)[1]
    )["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = {name.lstrip("./") for name in tar.getnames()}
        files = {
            member.name.lstrip("./"): tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }
    assert {"model.pt", "model.json", "code/inference.py", "code/requirements.txt"} <= names
    assert "code/bincount/models/export.py" in names  # what inference.py imports
    assert {n for n in files if n.startswith("code/bincount/serving")} == {
        "code/bincount/serving/__init__.py", "code/bincount/serving/inputs.py",
        "code/bincount/serving/runtimes.py"}
    assert "model.onnx" not in names  # the artifact carries the chosen runtime only
    assert_runtime_only(files)
    assert files["code/inference.py"] == Path(handlers.__file__).read_bytes()
    assert json.loads(files["model.json"]) == json.loads((model_dir / "model.json").read_text())
    weights = torch.load(io.BytesIO(files["model.pt"]), weights_only=True)
    original = torch.load(model_dir / "model.pt", weights_only=True)
    assert weights.keys() == original.keys()
    assert torch.equal(weights["fc.weight"], original["fc.weight"])

    client = boto3.client("sagemaker", region_name=REGION)
    assert client.describe_endpoint(EndpointName=ENDPOINT)["EndpointName"] == ENDPOINT
    assert delete_endpoint(deploy_cfg(make_cfg, "deploy.delete=true"), session) == ENDPOINT
    for call, key in (
        (client.describe_endpoint, "EndpointName"),
        (client.describe_endpoint_config, "EndpointConfigName"),
        (client.describe_model, "ModelName"),
    ):
        with pytest.raises(ClientError):
            call(**{key: ENDPOINT})


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["deploy.role=null"], "deploy.role is required"),
        (["model_dir=/nonexistent/model"], "/nonexistent/model/model.json is missing"),
        (["deploy.delete=true", "deploy.endpoint_name=null"], "deploy.endpoint_name is required"),
        (["deploy.delete=maybe"], "deploy.delete: expected true or false, got 'maybe'"),
    ],
)
def test_bad_settings_are_named_before_aws_is_called(
    overrides: list[str],
    words: str,
    model_dir: Path,
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = deploy_cfg(make_cfg, f"model_dir={model_dir}", *overrides)
    with pytest.raises(BincountError, match=words):
        deploy(cfg)


def test_aws_refusals_become_one_clear_message(
    aws: None, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = deploy_cfg(make_cfg, "deploy.delete=true", "deploy.endpoint_name=no-such-endpoint")
    with pytest.raises(BincountError, match="AWS refused the request"):
        deploy(cfg)
