"""Read captured traffic, local or on S3, in the layout SageMaker's DataCaptureConfig writes
(see :mod:`bincount.serving.capture`): every ``*.jsonl`` under a dir or an ``s3://`` prefix."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bincount.aws import parse_s3_uri
from bincount.data.abid import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Captured:
    """One captured request: its image and, where the response was JSON, the answer."""

    event_id: str
    time: str
    image: bytes
    content_type: str
    output: dict[str, Any] | None

    def prediction(self) -> tuple[int, float] | None:
        """(count, confidence) the endpoint answered, if the answer holds them."""
        try:
            probabilities = self.output["probabilities"]  # type: ignore[index]
            return int(self.output["count"]), float(max(probabilities.values()))  # type: ignore
        except (TypeError, KeyError, ValueError, AttributeError):
            return None


def _decode(side: dict[str, Any]) -> bytes:
    data = side["data"]
    if side.get("encoding", "BASE64").upper() == "BASE64":
        return base64.b64decode(data, validate=True)
    return str(data).encode()


def _image(body: bytes, content_type: str) -> bytes:
    """The photo of a request body: the body itself, or for a JSON request
    (``{"image": "<base64>", "expected": n}``) its decoded ``image``."""
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        return body
    request = json.loads(body)
    if not isinstance(request, dict) or not isinstance(request.get("image"), str):
        raise ValueError('a JSON request without an "image" string')
    return base64.b64decode(request["image"], validate=True)


def parse_record(line: str) -> Captured:
    """One JSON Lines record; ValueError/KeyError/TypeError if it is not a capture record."""
    record = json.loads(line)
    data = record["captureData"]
    meta = record.get("eventMetadata", {})
    content_type = str(data["endpointInput"].get("observedContentType", ""))
    image = _image(_decode(data["endpointInput"]), content_type)
    output: dict[str, Any] | None = None
    if "endpointOutput" in data:
        try:
            parsed = json.loads(_decode(data["endpointOutput"]))
            output = parsed if isinstance(parsed, dict) else None
        except (ValueError, binascii.Error):
            output = None
    return Captured(str(meta.get("eventId", "")), str(meta.get("inferenceTime", "")), image,
                    content_type, output)


def _texts(source: str) -> Iterator[tuple[str, str]]:
    """(name, text) of every capture file under ``source``, in name order (= time order)."""
    if source.startswith("s3://"):
        import boto3

        bucket, prefix = parse_s3_uri(source, "capture")
        s3 = boto3.client("s3")
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl")]
        for key in sorted(keys):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            yield f"s3://{bucket}/{key}", body.decode("utf-8", errors="replace")
        return
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"capture={source}: no such directory (expected the serve.capture.dir "
                        "of a local endpoint or an s3:// capture prefix)")
    for path in sorted(root.rglob("*.jsonl")):
        yield str(path), path.read_text(encoding="utf-8", errors="replace")


def read_capture(source: str, limit: int | None = None) -> tuple[list[Captured], int]:
    """(the newest ``limit`` captured requests, or all; how many lines were not records)."""
    records: list[Captured] = []
    bad = 0
    for name, text in _texts(str(source)):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(parse_record(line))
            except (ValueError, KeyError, TypeError, binascii.Error) as err:
                bad += 1
                if bad == 1:
                    log.warning("%s:%d is not a capture record (%s); skipped", name, number, err)
    if limit is not None:
        records = records[-limit:]
    return records, bad
