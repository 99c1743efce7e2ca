"""Shared fixtures: one composed config (tiny sizes) reused by every training test, the real
ABID sample, and an ABID-layout directory made from it."""

from __future__ import annotations

import os
import sys

# One intra-op thread per pytest-xdist worker, and for the processes a test starts (they inherit
# the environment): the workers already use every core, and OpenMP threads that outnumber the
# cores spin against each other and run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # imported before this file: its pool is already sized
        sys.modules["torch"].set_num_threads(1)

import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from bincount.config import check_targets
from bincount.data.abid import read_metadata, write_file_list
from tests.support.paths import CONF, ROOT, SAMPLE  # noqa: F401 (ROOT: for tests)
from tests.support.tiny import TINY


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic sets rendered once per session and shared by the tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(tmp_path: Path, cache_dir: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/<name>.yaml`` with the tiny overrides, writing under tmp_path."""

    def _make(*overrides: str, name: str = "train", tiny: bool = True) -> DictConfig:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose(
                name,
                overrides=[
                    f"paths.root_dir={tmp_path}",
                    f"paths.cache_dir={cache_dir}",
                    f"paths.output_dir={tmp_path / 'run'}",
                    *(TINY if tiny else []),
                    *overrides,
                ],
            )
        with open_dict(cfg):
            cfg.pop("hydra", None)
        check_targets(cfg)  # as the scripts do: only trusted `_target_`s
        return cfg

    return _make


@pytest.fixture
def cfg(make_cfg: Callable[..., DictConfig]) -> DictConfig:
    return make_cfg()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not (SAMPLE / "images").is_dir():
        pytest.skip(f"the real ABID sample is absent ({SAMPLE})")
    return SAMPLE


@pytest.fixture(scope="session")
def abid_dir(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ABID-layout data dir of the real sample photos with 1-5 items."""
    out = tmp_path_factory.mktemp("abid")
    (out / "images").mkdir()
    (out / "metadata").mkdir()
    labels: dict[str, int] = {}
    for path in sorted((sample_dir / "metadata").glob("*.json")):
        meta = read_metadata(path)
        if 1 <= meta.expected_quantity <= 5:
            labels[meta.image_id] = meta.expected_quantity
            shutil.copy(sample_dir / "images" / f"{meta.image_id}.jpg", out / "images")
            shutil.copy(path, out / "metadata")
    write_file_list(out / "file_list.json", labels)
    return out


@pytest.fixture
def ctrl_c_reaches_children() -> Iterator[None]:
    """Children start with SIGINT at its default, as under a terminal, where Ctrl-C raises
    KeyboardInterrupt. Without this they inherit whatever the suite was started with: a
    shell's background job (``cmd &``) ignores SIGINT, and so would every child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny steps train fastest on one intra-op thread, and far faster on a busy machine
    (where two OpenMP threads contend with other processes for the cores)."""
    import torch  # not at the top: most tests never need it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

