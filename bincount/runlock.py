"""One run per output dir: a lock file that names the PID and host holding it.

Two runs in one ``paths.output_dir`` would share checkpoints, the exported model and
metrics.json, and silently report each other's results. The lock of a process that died
(same host, PID gone) is taken over with a warning."""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bincount.errors import BincountError

log = logging.getLogger(__name__)

LOCK_FILE = ".bincount.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _holder(lock: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(lock.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _create(lock: Path, content: dict[str, Any]) -> None:
    """Create ``lock`` with its content in one step (a hard link of a written temp file), so
    no other run ever reads it empty; FileExistsError if it exists."""
    fd, tmp = tempfile.mkstemp(prefix=f"{lock.name}.", dir=lock.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f)
        os.link(tmp, lock)
    finally:
        os.unlink(tmp)


@contextmanager
def output_dir_lock(output_dir: Path) -> Iterator[None]:
    """Hold ``<output_dir>/.bincount.lock`` for the duration of the block."""
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            _create(lock, me)
        except FileExistsError:
            holder = _holder(lock)
            pid, host = holder.get("pid"), holder.get("host")
            if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                log.warning("taking over %s: its run (pid %d on %s) is gone", lock, pid, host)
                lock.unlink(missing_ok=True)
                continue
            raise BincountError(
                f"paths.output_dir: {output_dir} is in use by another run (pid {pid} on "
                f"{host}, see {lock}); wait for it to finish or choose another "
                "paths.output_dir") from None
        break
    try:
        yield
    finally:
        if _holder(lock).get("pid") == me["pid"]:
            lock.unlink(missing_ok=True)
