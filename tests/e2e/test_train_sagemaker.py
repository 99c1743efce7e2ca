"""``python scripts/train.py launcher=sagemaker ...`` as a user runs it, against moto's server on
127.0.0.1: a mistake stops with exit 2 before any upload; a good command submits the job and
returns with its name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.support.aws import BUCKET, OUTPUT, REGION, ROLE, TRAIN, reset_moto
from tests.support.local_s3 import LocalS3
from tests.support.paths import ROOT


@pytest.mark.slow
def test_the_command_submits_and_returns_with_the_job_name_or_stops_with_the_fix(
    tmp_path: Path,
) -> None:
    """Run outside the checkout (``cwd`` and ``paths.root_dir`` elsewhere): the job's source is
    the checkout whose conf/ the script composed."""
    with LocalS3(REGION) as s3:
        reset_moto(s3.url)
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))}
        env.update(AWS_ENDPOINT_URL=s3.url, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
        command = [sys.executable, str(ROOT / "scripts" / "train.py"), "launcher=sagemaker",
                   f"launcher.inputs.train={TRAIN}", f"launcher.output_path={OUTPUT}",
                   "model.optimizer.lr=0.0023", "trainer.max_epochs=21", "launcher.wait=false",
                   f"paths.root_dir={tmp_path}"]

        refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=300)
        assert refused.returncode == 2
        assert "launcher.role: no IAM role given" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert "Contents" not in client.list_objects_v2(Bucket=BUCKET), "nothing uploaded"

        done = subprocess.run(command, cwd=tmp_path, env={**env, "SAGEMAKER_ROLE": ROLE},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        name = re.search(r"SageMaker training job: (bincount-[\w-]+)", done.stdout).group(1)
        assert f"#/jobs/{name}" in done.stdout
        assert "source bundle:" in done.stdout and "(bincount/, conf/, scripts/train.py" in \
            done.stdout
        assert "SageMakerV2DeprecationWarning" not in done.stderr  # quiet_sdk, before the import
        (record,) = (tmp_path / "outputs" / "train" / "runs").glob("*/job.json")
        assert json.loads(record.read_text())["job_name"] == name
        job = boto3.client("sagemaker", endpoint_url=s3.url, region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing"
                           ).describe_training_job(TrainingJobName=name)
        assert job["HyperParameters"]["model.optimizer.lr"] == '"0.0023"'
