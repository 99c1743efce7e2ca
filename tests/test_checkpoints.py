"""Checkpoints: atomic writes in their own directory, weights-only loads, a clear stop on a
damaged last.ckpt."""

from __future__ import annotations

import os
import pathlib
import re
from pathlib import Path

import pytest
import torch

from bincount.checkpoints import AtomicCheckpointIO, remove_orphans, resume_checkpoint
from bincount.errors import BincountError


class Crafted:
    """Unpickling this runs code: it creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


def test_save_writes_beside_the_destination_and_leaves_no_temp_file(tmp_path: Path,
                                                                     monkeypatch) -> None:
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))  # a scratch TMPDIR on "another filesystem"
    created: list[str] = []
    real_save = torch.save

    def spy(obj, f, *args, **kwargs):  # records where the bytes are first written
        created.append(str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    target = tmp_path / "ckpts" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)

    assert Path(created[0]).parent == target.parent  # never staged in $TMPDIR
    assert torch.load(target, weights_only=True)["state_dict"]["w"].sum() == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    assert not list(elsewhere.iterdir())


def test_a_failed_save_keeps_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)

    def broken(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["state_dict"]["w"].sum() == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_orphan_temp_files_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "best.ckpt").write_bytes(b"kept")
    removed = remove_orphans(tmp_path)
    assert [p.name for p in removed] == [".last.ckpt.abc123.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]


@pytest.mark.parametrize("damage", ["truncated", "flipped bytes", "not finite"])
def test_a_damaged_last_checkpoint_is_named_with_the_ways_out(tmp_path: Path,
                                                              damage: str) -> None:
    last = tmp_path / "last.ckpt"
    state = {"epoch": 2, "state_dict": {"w": torch.randn(256, 256)}}
    if damage == "not finite":
        state["state_dict"]["w"][0, 0] = float("nan")
    torch.save(state, last)
    data = bytearray(last.read_bytes())
    if damage == "truncated":
        last.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "flipped bytes":
        middle = len(data) // 2
        data[middle: middle + 64] = bytes(b ^ 0xFF for b in data[middle: middle + 64])
        last.write_bytes(bytes(data))
    with pytest.raises(BincountError) as err:
        resume_checkpoint(None, tmp_path)
    message = str(err.value)
    assert message.startswith(f"ckpt_path: cannot resume from {last}: ")
    assert "delete it" in message and "ckpt_path=<another checkpoint>" in message


def test_a_crafted_checkpoint_does_not_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": Crafted(marker)}, tmp_path / "last.ckpt")
    with pytest.raises(BincountError, match=re.escape("cannot resume from")):
        resume_checkpoint("last", tmp_path)
    assert not marker.exists()


def test_resume_from_nothing_or_a_missing_file(tmp_path: Path) -> None:
    assert resume_checkpoint(None, tmp_path) is None
    with pytest.raises(BincountError, match="ckpt_path: no checkpoint at"):
        resume_checkpoint(os.fspath(tmp_path / "nope.ckpt"), tmp_path)
