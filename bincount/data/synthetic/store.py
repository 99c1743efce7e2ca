"""A synthetic set on disk: rendered once per parameters (``synthetic.json``), into a hidden
staging sibling that is renamed into place, so an interrupted render never leaves a partial set;
the staging of killed renders on this host is removed by the next one."""

from __future__ import annotations

import glob
import io
import json
import logging
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bincount.cpus import usable_cpus
from bincount.data.abid import FILE_LIST, IMAGES, METADATA, DataError, write_file_list
from bincount.data.synthetic.render import render_bin
from bincount.errors import expect_int

log = logging.getLogger(__name__)

MARKER = "synthetic.json"
VERSION = 3  # bump whenever the rendering changes, so cached sets are re-rendered
ID_WIDTH = 6
PARALLEL_FROM = 200  # bins per rendering process at least
SMALL_Q = 95  # quality of a bin saved at the training size: compressed once already, as drawn


def render_synthetic(
    out_dir: str | Path,
    *,
    per_class: int,
    image_size: int,
    seed: int,
    counts: Sequence[int],
    save_size: int | None = None,
) -> Path:
    """Render ``per_class`` bins for every count into ``out_dir`` (ABID layout) and return it.

    The arguments are ``data.synthetic`` (``per_class``, ``image_size``, ``seed``,
    ``save_size``) and ``data.counts`` of the config. Bins are drawn at ``image_size`` and saved
    at ``save_size`` (the training size: nothing to resize per epoch; None: as drawn).

    A set already there with the same parameters (see ``synthetic.json``) is kept as is. The set
    is rendered into a temporary sibling and renamed into place, so an interrupted render never
    leaves a partial set in ``out_dir``.
    """
    out_dir = Path(out_dir)
    params = _check_params(per_class, image_size, seed, counts, save_size)
    marker = out_dir / MARKER
    if out_dir.exists():
        made = _read_marker(marker)
        if made is not None and all(made.get(key) == value for key, value in params.items()):
            return out_dir
        if not marker.is_file() and any(out_dir.iterdir()):
            raise DataError(
                f"{out_dir} is not empty and holds no {MARKER}: refusing to overwrite it with "
                "synthetic data (choose another data_dir or empty it)"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir), dir=out_dir.parent))
    try:
        log.info("rendering %d synthetic bins into %s", per_class * len(counts), out_dir)
        _render_set(staging, params)
        _replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _check_params(
    per_class: int, image_size: int, seed: int, counts: Sequence[int], save_size: int | None
) -> dict[str, Any]:
    """The set's parameters as its marker records them; a bad one is named by its config key."""
    counts = [expect_int(f"data.counts[{n}]", c, 1) for n, c in enumerate(counts)]
    if not counts or len(set(counts)) != len(counts) or max(counts) > 8:
        raise DataError(f"data.counts: expected distinct integers in 1..8 for synthetic bins, "
                        f"got {counts}")
    return {
        "generator": "bincount.data.synthetic",
        "version": VERSION,
        "per_class": expect_int("data.synthetic.per_class", per_class, 1),
        "image_size": expect_int("data.synthetic.image_size", image_size, 32),
        "seed": expect_int("data.synthetic.seed", seed, 0),
        "counts": counts,
        "save_size": image_size if save_size is None
        else expect_int("data.synthetic.save_size", save_size, 8),
    }


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        made = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return made if isinstance(made, dict) else None


def _staging_prefix(out_dir: Path) -> str:
    """Hidden sibling names that say which process on which host made them."""
    return f".{out_dir.name}.partial-{socket.gethostname()}-{os.getpid()}-"


def _remove_abandoned(out_dir: Path) -> None:
    """Delete the staging left by renders on this host that were killed (SIGKILL, SIGTERM)."""
    start = f".{out_dir.name}.partial-{socket.gethostname()}-"
    for path in out_dir.parent.glob(f"{glob.escape(start)}*"):
        pid = path.name[len(start):].split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            for _ in range(5):  # a dying rendering process may still finish one file
                shutil.rmtree(path, ignore_errors=True)
                if not path.exists():
                    break
                time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` in for ``target``; the old set (if any) is moved aside first, then removed."""
    if not target.exists():
        new.rename(target)
        return
    old = Path(f"{new}-old")
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _shrink(image: Image.Image, quality: int, side: int) -> Image.Image:
    """``image`` JPEG-compressed at ``quality`` as drawn, decoded, resized to ``side``."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as compressed:
        return compressed.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)


def _render_set(root: Path, params: dict[str, Any]) -> None:
    (root / IMAGES).mkdir()
    (root / METADATA).mkdir()
    # Bin ``number`` (from 1) holds count counts[i] of round ``index``: its own seed, so any
    # process can draw it and the set does not depend on how it was split.
    jobs = [(number, count, index) for number, (index, count) in enumerate(
        ((i, c) for i in range(params["per_class"]) for c in params["counts"]), start=1)]
    processes = _processes(len(jobs))
    if processes > 1:
        chunks = [jobs[k::processes] for k in range(processes)]
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_render_bins, [root] * processes, [params] * processes, chunks,
                          [os.getpid()] * processes))
    else:
        _render_bins(root, params, jobs)
    labels = {f"{number:0{ID_WIDTH}d}": count for number, count, _ in jobs}
    write_file_list(root / FILE_LIST, labels)
    (root / MARKER).write_text(json.dumps({**params, "images": len(jobs)}, indent=2) + "\n")


def _processes(bins: int) -> int:
    """Render in one process per usable core (forked: the drawing code is numpy and PIL only),
    where the set is large enough to pay for the processes and the platform forks."""
    if bins < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(usable_cpus(), bins // PARALLEL_FROM))


def _render_bins(root: Path, params: dict[str, Any], jobs: list[tuple[int, int, int]],
                 parent: int | None = None) -> None:
    """Render ``jobs``; in a rendering process, ``parent`` is the render's PID: once it is gone
    (killed with SIGKILL) this process stops at the next bin instead of writing on into the
    staging that the next render removes."""
    for number, count, index in jobs:
        if parent is not None and os.getppid() != parent:
            os._exit(1)
        image_id = f"{number:0{ID_WIDTH}d}"
        rng = np.random.default_rng([params["seed"], count, index])
        image, metadata = render_bin(count, params["image_size"], rng)
        quality = int(rng.integers(60, 92))
        path = root / IMAGES / f"{image_id}.jpg"
        if params["save_size"] == params["image_size"]:
            image.save(path, "JPEG", quality=quality)
        else:  # the camera's compression at the drawn size, then the resize training did
            _shrink(image, quality, params["save_size"]).save(path, "JPEG", quality=SMALL_Q)
        (root / METADATA / f"{image_id}.json").write_text(json.dumps(metadata))
