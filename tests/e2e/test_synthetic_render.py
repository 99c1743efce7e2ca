"""A synthetic render in its own process, interrupted: never a half set under its name."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bincount.data.abid import read_file_list
from bincount.data.synthetic import render_synthetic

SMALL = {"per_class": 3, "image_size": 48, "seed": 0, "counts": (1, 2, 3, 4, 5)}


def renderers(script: str) -> list[int]:
    """PIDs of the processes running ``script`` (the render and its forks), from /proc."""
    found: list[int] = []
    if not Path("/proc").is_dir():  # not Linux: nothing to look at
        return found
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and script.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # it exited meanwhile
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_an_interrupted_render_leaves_no_partial_set(
    tmp_path: Path, sig: signal.Signals, ctrl_c_reaches_children: None
) -> None:
    out = tmp_path / "set"
    script = (
        "from bincount.data.synthetic import render_synthetic; "
        f"render_synthetic({str(out)!r}, per_class=2000, image_size=48, seed=0, counts=[1, 2])"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob(".set.*/images/*.jpg")):  # rendering is under way
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(sig)
    assert process.wait(timeout=60) != 0
    assert not out.exists()  # never a half set under out_dir
    # Its rendering processes (one per core) do not outlive it, even after SIGKILL.
    deadline = time.monotonic() + 10
    while renderers(script) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert renderers(script) == []
    if sig == signal.SIGINT:
        assert list(tmp_path.iterdir()) == []  # and the staging is cleaned up at once

    render_synthetic(out, **SMALL)  # the next render also removes a killed one's staging
    assert len(read_file_list(out / "file_list.json")) == 15
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
