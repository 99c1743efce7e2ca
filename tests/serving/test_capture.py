from __future__ import annotations

import base64
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bincount.serving.capture import CaptureWriter

ANSWER = b'{"count": 2, "probabilities": {"1": 0.1, "2": 0.9}, "model": "tiny/1"}'


def lines(root: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(root.rglob("*.jsonl"))
            for line in p.read_text().splitlines()]


def wait_for(predicate, timeout: float = 10) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_records_have_sagemakers_layout_and_rotate_hourly(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, sampling=1.0, max_queue=16)
    writer.start()
    first = datetime(2026, 12, 2, 7, 59, 59, 123000, tzinfo=timezone.utc)
    assert writer.offer(b"\xff\xd8jpeg", "image/jpeg", ANSWER, "application/json", first)
    assert writer.offer(b'{"image": "eA==", "expected": 2}', "application/json", ANSWER,
                        "application/json", first.replace(hour=8, minute=0, second=1),
                        custom_attributes="trace=7, expected=2")
    writer.stop()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert [f.rsplit("/", 1)[0] for f in files] == [
        "local/AllTraffic/2026/12/02/07", "local/AllTraffic/2026/12/02/08"]
    assert files[0].rsplit("/", 1)[1].startswith("59-59-123-")
    record = lines(tmp_path)[0]
    assert record["captureData"]["endpointInput"] == {
        "observedContentType": "image/jpeg", "mode": "INPUT",
        "data": base64.b64encode(b"\xff\xd8jpeg").decode(), "encoding": "BASE64"}
    assert record["captureData"]["endpointOutput"] == {
        "observedContentType": "application/json", "mode": "OUTPUT",
        "data": ANSWER.decode(), "encoding": "JSON"}
    assert record["eventMetadata"]["inferenceTime"] == "2026-12-02T07:59:59.123Z"
    assert len(record["eventMetadata"]["eventId"]) == 36
    assert "customAttributes" not in record["eventMetadata"]  # the request had none
    reconciled = lines(tmp_path)[1]
    assert reconciled["eventMetadata"]["customAttributes"] == "trace=7, expected=2"
    assert reconciled["captureData"]["endpointInput"]["encoding"] == "JSON"
    assert json.loads(reconciled["captureData"]["endpointInput"]["data"])["expected"] == 2
    assert writer.captured == 2 and writer.dropped == writer.failed == 0


def test_sampling_keeps_about_its_share(tmp_path: Path) -> None:
    none = CaptureWriter(tmp_path, sampling=0.0, max_queue=1000)
    assert not any(none.offer(b"x", "image/jpeg", ANSWER, "application/json") for _ in range(50))
    some = CaptureWriter(tmp_path, sampling=0.2, max_queue=1000)
    kept = sum(some.offer(b"x", "image/jpeg", ANSWER, "application/json") for _ in range(1000))
    assert 130 < kept < 270


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, sampling=1.0, max_queue=2)  # not started: nothing drains
    start = time.perf_counter()
    kept = [writer.offer(b"x", "image/jpeg", ANSWER, "application/json") for _ in range(5)]
    assert time.perf_counter() - start < 0.5
    assert kept == [True, True, False, False, False] and writer.dropped == 3


def test_an_unwritable_dir_is_logged_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a dir")
    writer = CaptureWriter(blocked, sampling=1.0, max_queue=16)
    writer.start()
    with caplog.at_level(logging.ERROR, "bincount.serving.capture"):
        for _ in range(3):
            assert writer.offer(b"x", "image/jpeg", ANSWER, "application/json")
        wait_for(lambda: writer.failed == 3)
    writer.stop()
    assert writer.captured == 0
    errors = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(errors) == 1 and str(blocked) in errors[0].getMessage()
