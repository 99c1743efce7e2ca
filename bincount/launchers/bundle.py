"""The source bundle a SageMaker training job runs: the package, conf/, scripts/ and the
container's ``requirements.txt``, copied from this checkout into a staging directory.

Only those three trees go in (and from them only source and config files), so the virtual
environment, data, logs and outputs never do. ``requirements.txt`` lists the project's runtime
dependencies except those the SageMaker PyTorch training image provides (torch, torchvision)
and those the training does not use; the toolkit in the image pip-installs it before the entry
point starts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import bincount
from bincount.errors import BincountError

PACKAGE = "bincount"
TREES = (PACKAGE, "conf", "scripts")
REQUIREMENTS = "requirements.txt"
# The training image provides these; installing them again would replace its CUDA build.
IMAGE_PROVIDES = ("torch", "torchvision")
# Copied from the trees: sources, configs and the package data (the ABID file list).
SUFFIXES = {".py", ".yaml", ".yml", ".json", ".typed"}
IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints"}


@dataclass(frozen=True)
class Bundle:
    root: Path
    files: tuple[str, ...]  # relative paths, sorted
    size: int  # bytes, uncompressed

    def describe(self) -> str:
        parts = [f"{t}/" for t in TREES] + ([REQUIREMENTS] if self.has_requirements else [])
        return (f"source bundle: {len(self.files)} files, {self.size / 1024:.0f} KiB "
                f"({', '.join(parts)})")

    @property
    def has_requirements(self) -> bool:
        return REQUIREMENTS in self.files


def project_root() -> Path:
    """The checkout holding the package, conf/ and scripts/ (an editable install)."""
    root = Path(bincount.__file__).resolve().parents[1]
    missing = [t for t in TREES if not (root / t).is_dir()]
    if missing:
        raise BincountError(
            f"launcher=sagemaker stages the source from a checkout, but {root} has no "
            f"{', '.join(missing)}/: install the project editable (pip install -e .) and run "
            "from the checkout"
        )
    return root


def container_requirements(exclude: Iterable[str] = ()) -> list[str]:
    """The project's runtime requirements (as installed, from its metadata) minus the image's
    own packages and ``exclude``; extras (dev) are left out."""
    try:
        declared = requires(PACKAGE) or []
    except PackageNotFoundError as err:
        raise BincountError(
            f"the {PACKAGE} package is not installed, so its requirements are unknown: "
            "pip install -e ."
        ) from err
    skip = {canonicalize_name(n) for n in (*IMAGE_PROVIDES, *exclude)}
    kept = []
    for line in declared:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        if canonicalize_name(req.name) not in skip:
            kept.append(str(req))
    return kept


def _wanted(path: Path, tree_root: Path) -> bool:
    parts = path.relative_to(tree_root).parts
    if any(p in IGNORED_DIRS or p.startswith(".") or p.endswith(".egg-info") for p in parts):
        return False
    return path.is_file() and path.suffix in SUFFIXES


def stage_bundle(dest: Path, requirements: list[str] | None, root: Path | None = None) -> Bundle:
    """Copy the trees into ``dest`` (which must not exist); write ``requirements.txt`` unless
    ``requirements`` is None (an image that has everything)."""
    root = root or project_root()
    dest = Path(dest)
    dest.mkdir(parents=True)
    files: list[str] = []
    for tree in TREES:
        for path in sorted((root / tree).rglob("*")):
            if _wanted(path, root):
                rel = path.relative_to(root)
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
                files.append(rel.as_posix())
    if requirements is not None:
        (dest / REQUIREMENTS).write_text("".join(f"{r}\n" for r in requirements))
        files.append(REQUIREMENTS)
    size = sum((dest / f).stat().st_size for f in files)
    return Bundle(root=dest, files=tuple(sorted(files)), size=size)
