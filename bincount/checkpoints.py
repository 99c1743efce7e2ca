"""Training checkpoints on disk: written atomically beside their destination, loaded only as
weights (never unpickling code), and checked before a run resumes from one."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from bincount.errors import BincountError
from bincount.files import atomic_path

log = logging.getLogger(__name__)

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with the temporary file in the checkpoint's own directory.

    Lightning's own atomic save stages the file in ``$TMPDIR`` and moves it; across filesystems
    (a tmpfs ``/tmp``, a scratch ``TMPDIR``) that move is a copy, and a kill during the copy left
    a truncated ``last.ckpt`` that every resume then failed on."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        if "://" in str(path):  # a remote URL: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def remove_orphans(checkpoint_dir: Path) -> list[Path]:
    """Temporary files a killed run left in ``checkpoint_dir`` (the caller holds the output
    dir's lock, so no other run is writing them)."""
    orphans = sorted(Path(checkpoint_dir).glob(".*.tmp")) if Path(checkpoint_dir).is_dir() else []
    for path in orphans:
        path.unlink(missing_ok=True)
        log.info("removed %s, left by a run that was stopped while writing it", path)
    return orphans


def verify(path: Path) -> None:
    """Load ``path`` as weights only; a file that is truncated, corrupt or not a Lightning
    checkpoint stops the run with the file, the reason and the two ways out."""
    try:
        # torch.load does not check the archive's CRCs: a flipped byte in a tensor would load.
        with zipfile.ZipFile(path) as archive:
            corrupt = archive.testzip()
        if corrupt is not None:
            raise ValueError(f"{corrupt} fails its CRC check (the file is corrupt)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "state_dict" not in state:
            raise ValueError("it holds no model state (not a Lightning checkpoint)")
        bad = [k for k, v in state["state_dict"].items()
               if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"{len(bad)} weight tensors are not finite (e.g. {bad[0]})")
    except Exception as err:  # whatever torch makes of a damaged file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BincountError(
            f"ckpt_path: cannot resume from {path}: {reason[:300]}. Either delete it (the run "
            f"then resumes from nothing, or starts afresh) or pass ckpt_path=<another checkpoint>"
        ) from err


def resume_checkpoint(ckpt_path: str | None, checkpoint_dir: Path) -> str | None:
    """The checkpoint a run resumes from, verified: ``"last"`` or unset with a last.ckpt
    present -> that file; else the given path; None -> start afresh."""
    last = Path(checkpoint_dir) / LAST
    if ckpt_path is None:
        if not last.is_file():
            return None
        path = last
    else:
        path = last if ckpt_path == "last" else Path(ckpt_path)
        if not path.is_file():
            raise BincountError(f"ckpt_path: no checkpoint at {path}")
    verify(path)
    log.info("resuming from %s", path)
    return str(path)
