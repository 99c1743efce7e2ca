"""Data capture for the local endpoint, in the layout SageMaker's DataCaptureConfig writes.

One JSON Lines record per sampled request::

    {"captureData": {"endpointInput": {"observedContentType": "image/jpeg", "mode": "INPUT",
                                       "data": "<base64>", "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json",
                                        "mode": "OUTPUT", "data": "<the JSON>",
                                        "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceTime": "2026-12-02T07:00:00.000Z",
                       "customAttributes": "expected=3"},
     "eventVersion": "0"}

(``customAttributes``: the request's ``X-Amzn-SageMaker-Custom-Attributes``, only when it had
one; the expected count of a reconciliation request sent that way.)

in ``<dir>/<endpoint>/<variant>/yyyy/mm/dd/hh/<mm-ss-mmm>-<uuid>.jsonl`` (UTC; a new file each
hour), so :mod:`bincount.monitoring.capture` reads a local capture and a SageMaker one alike.

The request path only samples and enqueues (:meth:`CaptureWriter.offer` never blocks): encoding
and writing happen on one background thread. A full queue drops the record; a write that fails
(an unwritable dir, a full disk) is logged once per failure streak; both are counted, and the
request is answered either way.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import queue
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("bincount.serving.capture")

ENDPOINT = "local"
VARIANT = "AllTraffic"
TEXT_TYPES = ("application/json", "text/csv")


@dataclass(frozen=True)
class Event:
    body: bytes
    content_type: str
    output: bytes
    output_type: str
    when: datetime
    event_id: str
    custom_attributes: str | None = None


def encode(data: bytes, content_type: str) -> dict[str, str]:
    """SageMaker's encoding of one side: JSON/CSV as text, anything else base64."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in TEXT_TYPES:
        try:
            return {"data": data.decode("utf-8"), "encoding": "CSV" if "csv" in kind else "JSON"}
        except UnicodeDecodeError:
            pass
    return {"data": base64.b64encode(data).decode("ascii"), "encoding": "BASE64"}


def capture_record(event: Event) -> dict[str, Any]:
    """The DataCaptureConfig record of one request and its response."""
    return {
        "captureData": {
            "endpointInput": {"observedContentType": event.content_type, "mode": "INPUT",
                              **encode(event.body, event.content_type)},
            "endpointOutput": {"observedContentType": event.output_type, "mode": "OUTPUT",
                               **encode(event.output, event.output_type)},
        },
        "eventMetadata": {
            "eventId": event.event_id,
            "inferenceTime": event.when.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{event.when.microsecond // 1000:03d}Z",
            **({"customAttributes": event.custom_attributes}
               if event.custom_attributes is not None else {}),
        },
        "eventVersion": "0",
    }


class CaptureWriter:
    """Samples requests (``sampling``: the fraction kept, 0-1) and writes them under
    ``directory`` on a background thread; ``captured``, ``dropped`` (queue full) and ``failed``
    (write errors) count what happened to the sampled ones."""

    def __init__(self, directory: Path, sampling: float, max_queue: int,
                 endpoint: str = ENDPOINT, variant: str = VARIANT) -> None:
        self.root = Path(directory) / endpoint / variant
        self.sampling = sampling
        self.captured = self.dropped = self.failed = 0
        self._queue: queue.Queue[Event | None] = queue.Queue(max_queue)
        self._random = random.Random()
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self._hour = ""
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Write what is queued (for up to ``timeout`` s), then close the file."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None

    def offer(self, body: bytes, content_type: str, output: bytes, output_type: str,
              when: datetime | None = None, custom_attributes: str | None = None) -> bool:
        """Capture this request (answered at ``when``, default now) with probability
        ``sampling``; True if it was queued. Never blocks and never raises for a full queue."""
        if self.sampling <= 0 or (self.sampling < 1 and self._random.random() >= self.sampling):
            return False
        event = Event(body, content_type, output, output_type, when or datetime.now(timezone.utc),
                      str(uuid.uuid4()), custom_attributes)
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                break
            try:
                self._write(event)
            except Exception as err:  # OSError above all; never let the thread die
                self.failed += 1
                self._close()
                if not self._failing:
                    log.error("data capture cannot write under %s (%s: %s): requests are "
                              "answered, their capture is dropped and counted", self.root,
                              type(err).__name__, err)
                self._failing = True
        self._close()

    def _write(self, event: Event) -> None:
        line = json.dumps(capture_record(event), separators=(",", ":")) + "\n"
        hour = event.when.strftime("%Y/%m/%d/%H")
        if self._file is None or hour != self._hour:
            self._close()
            folder = self.root / hour
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{event.when.strftime('%M-%S')}-{event.when.microsecond // 1000:03d}-" \
                   f"{uuid.uuid4()}.jsonl"
            self._file = (folder / name).open("a", encoding="utf-8")
            self._hour = hour
        self._file.write(line)
        if self._queue.empty():
            self._file.flush()
        self.captured += 1
        if self._failing:
            log.info("data capture writes under %s again", self.root)
            self._failing = False

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
