"""Atomic file writes: a reader (or a resume after a crash) never sees half a file.

The temporary file lives in the destination's own directory, so the final rename never
crosses a filesystem (``os.replace`` across filesystems is a copy, and a copy can be cut).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed to disk and renamed
    to ``path``; on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, write: Callable[[IO[Any]], object],
                 binary: bool = False) -> None:
    """``write(f)`` into a temporary sibling of ``path``, then rename it into place."""
    with atomic_path(path) as tmp, tmp.open("wb" if binary else "w") as f:
        write(f)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON with indent 2 and a final newline; NaN and infinities are refused (they are not
    JSON): a caller records a failure as a string or null instead."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_yaml_atomic(path: str | Path, data: Any) -> None:
    from omegaconf import OmegaConf  # not at the top: model.tar.gz ships this module, not omegaconf

    write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(data)))
