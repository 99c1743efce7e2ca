from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bincount.data.abid import DataError
from bincount.monitoring.capture import read_capture
from bincount.serving.capture import CaptureWriter
from tests.support.aws import moto_bucket

ANSWER = b'{"count": 3, "probabilities": {"1": 0.1, "2": 0.2, "3": 0.7}, "model": "tiny/1"}'


def capture(root: Path, bodies: list[bytes]) -> Path:
    writer = CaptureWriter(root, sampling=1.0, max_queue=100)
    writer.start()
    for body in bodies:
        writer.offer(body, "image/jpeg", ANSWER, "application/json")
    writer.stop()
    return root


def test_reads_back_what_the_server_captured(tmp_path: Path) -> None:
    capture(tmp_path, [b"one", b"two", b"three"])
    (next(tmp_path.rglob("*.jsonl"))).open("a").write("not json\n\n")
    records, bad = read_capture(str(tmp_path))
    assert [r.image for r in records] == [b"one", b"two", b"three"] and bad == 1
    assert records[0].prediction() == (3, 0.7)
    assert records[0].content_type == "image/jpeg" and records[0].time.endswith("Z")
    newest, _ = read_capture(str(tmp_path), limit=2)
    assert [r.image for r in newest] == [b"two", b"three"]


def test_a_json_request_is_read_as_the_photo_it_carries(tmp_path: Path) -> None:
    photo = b"\xff\xd8 jpeg bytes"
    request = json.dumps({"image": base64.b64encode(photo).decode(), "expected": 3}).encode()
    writer = CaptureWriter(tmp_path, sampling=1.0, max_queue=10)
    writer.start()
    writer.offer(request, "application/json", ANSWER, "application/json")
    writer.offer(b'{"expected": 3}', "application/json", ANSWER, "application/json")
    writer.stop()

    records, bad = read_capture(str(tmp_path))

    assert [r.image for r in records] == [photo] and bad == 1  # no image: not a usable record


def test_a_missing_capture_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="capture=.*nowhere: no such directory"):
        read_capture(str(tmp_path / "nowhere"))


def test_reads_a_capture_on_s3_as_sagemaker_lays_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture(tmp_path, [b"a", b"b"])
    with moto_bucket(monkeypatch, "captures") as s3:
        for path in tmp_path.rglob("*.jsonl"):
            s3.upload_file(str(path), "captures", f"datacapture/{path.relative_to(tmp_path)}")
        s3.put_object(Bucket="captures", Key="datacapture-other/x.jsonl", Body=b"{}")
        records, bad = read_capture("s3://captures/datacapture")
    assert [r.image for r in records] == [b"a", b"b"] and bad == 0
