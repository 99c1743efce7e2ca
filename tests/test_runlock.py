"""One run per output dir."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bincount.errors import BincountError
from bincount.runlock import LOCK_FILE, output_dir_lock


def test_a_second_run_into_a_locked_dir_is_refused_with_the_holder(tmp_path: Path) -> None:
    with output_dir_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(BincountError) as err, output_dir_lock(tmp_path):
            pass
    assert f"paths.output_dir: {tmp_path} is in use by another run (pid {os.getpid()}" in str(
        err.value)
    assert not (tmp_path / LOCK_FILE).exists()  # released by its holder only


def test_the_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, caplog) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with output_dir_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"pid {pid}" in caplog.text and "is gone" in caplog.text
