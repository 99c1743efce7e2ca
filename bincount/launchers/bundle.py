"""The source bundle a SageMaker training job runs: the package, conf/, the entry script and the
container's ``requirements.txt``, copied from the checkout into a staging directory.

Only ``bincount/``, ``conf/`` and ``scripts/train.py`` go in (and from the trees only source and
config files), so tests, benchmark scripts, the virtual environment, data, logs and outputs never
do. ``requirements.txt`` lists the project's runtime dependencies except those the SageMaker
PyTorch training image provides (torch, torchvision) and those the training does not use; the
toolkit in the image pip-installs it before the entry point starts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bincount.errors import BincountError

PACKAGE = "bincount"
TREES = (PACKAGE, "conf")
ENTRY_POINT = "scripts/train.py"  # the job's entry point: the script that trains here
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
        parts = [f"{t}/" for t in TREES] + [ENTRY_POINT]
        parts += [REQUIREMENTS] if REQUIREMENTS in self.files else []
        return (f"source bundle: {len(self.files)} files, {self.size / 1024:.0f} KiB "
                f"({', '.join(parts)})")


def source_root(cfg: DictConfig) -> Path:
    """The checkout whose code and configs the job runs: the directory above the ``conf/`` this
    run was composed from (Hydra's main config source), else ``paths.root_dir``."""
    root = Path(str(cfg.paths.root_dir))
    if HydraConfig.initialized():
        sources = HydraConfig.get().runtime.config_sources
        root = next((Path(s.path).parent for s in sources
                     if s.provider == "main" and s.schema == "file"), root)
    root = root.resolve()
    missing = [f"{p}/" for p in TREES if not (root / p).is_dir()]
    missing += [] if (root / ENTRY_POINT).is_file() else [ENTRY_POINT]
    if missing:
        raise BincountError(
            f"launcher=sagemaker stages the source from the checkout, but {root} has no "
            f"{', '.join(missing)}: run scripts/train.py of a checkout (or set paths.root_dir "
            "to one)"
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


def stage_bundle(dest: Path, requirements: list[str] | None, root: Path) -> Bundle:
    """Copy the trees and the entry script of the checkout ``root`` into ``dest`` (which must
    not exist); write ``requirements.txt`` unless ``requirements`` is None (an image that has
    everything)."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    paths = [p for tree in TREES for p in sorted((root / tree).rglob("*")) if _wanted(p, root)]
    files: list[str] = []
    for path in [*paths, root / ENTRY_POINT]:
        rel = path.relative_to(root)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)
        files.append(rel.as_posix())
    if requirements is not None:
        (dest / REQUIREMENTS).write_text("".join(f"{r}\n" for r in requirements))
        files.append(REQUIREMENTS)
    size = sum((dest / f).stat().st_size for f in files)
    return Bundle(root=dest, files=tuple(sorted(files)), size=size)
