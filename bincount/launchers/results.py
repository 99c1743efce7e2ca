"""After a completed job: its model and outputs, brought to this machine.

``output/model.tar.gz`` is unpacked into ``paths.model_dir``, ``output/output.tar.gz``
(metrics.json, the resolved config, the log) into ``<paths.output_dir>/job``; ``metrics.json``
and ``job.json`` (name, status, model artifact, final metrics) are written beside it.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bincount.aws import parse_s3_uri
from bincount.errors import BincountError
from bincount.files import write_json_atomic
from bincount.report import print_results

JOB_RECORD = "job.json"
METRICS = "metrics.json"


def download_and_unpack(s3: Any, uri: str, dest: Path) -> bool:
    """Unpack the tar.gz at ``uri`` into ``dest`` (replaced whole); False if it is not there."""
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        try:
            s3.download_file(bucket, key, str(archive))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        unpacked.rename(dest)
    return True


def record_job(output_dir: Path, record: Mapping[str, Any]) -> None:
    """Add ``record`` to ``<output_dir>/job.json`` (where the job is, for later)."""
    path = output_dir / JOB_RECORD
    known = json.loads(path.read_text()) if path.is_file() else {}
    write_json_atomic(path, {**known, **record})


def fetch_results(desc: Mapping[str, Any], s3: Any, output_dir: Path,
                  model_dir: Path) -> dict[str, Any]:
    """The model and outputs of the completed job ``desc`` (a DescribeTrainingJob reply) on
    this machine; prints the metrics. Returns the job's summary and its metrics."""
    job_name = desc["TrainingJobName"]
    model_uri = desc["ModelArtifacts"]["S3ModelArtifacts"]
    if not download_and_unpack(s3, model_uri, model_dir):
        raise BincountError(f"training job {job_name} completed but left no model at {model_uri}")
    output_uri = model_uri.rsplit("/", 1)[0] + "/output.tar.gz"
    job_dir = output_dir / "job"
    metrics: dict[str, Any] = {}
    if download_and_unpack(s3, output_uri, job_dir) and (job_dir / METRICS).is_file():
        metrics = json.loads((job_dir / METRICS).read_text())
        write_json_atomic(output_dir / METRICS, metrics)
    final = {m["MetricName"]: m["Value"] for m in desc.get("FinalMetricDataList", [])}
    summary = {"job_name": job_name, "status": desc["TrainingJobStatus"],
               "model_artifact": model_uri, "final_metrics": final}
    record_job(output_dir, summary)
    if metrics:
        print_results(metrics, {"model": model_dir, "job output": job_dir,
                                "metrics": output_dir / METRICS})
    for name, value in final.items():
        print(f"final {name}={value}", flush=True)
    return {**summary, "metrics": metrics}
