"""One composed ``launcher=sagemaker`` config per module (composing takes about a second)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.support.aws import launch_overrides
from tests.support.paths import CONF


@pytest.fixture(scope="module")
def job_cfg(tmp_path_factory: pytest.TempPathFactory) -> DictConfig:
    """What scripts/train.py composes for a SageMaker job of the default training config."""
    out: Path = tmp_path_factory.mktemp("run")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=[*launch_overrides(), f"paths.output_dir={out}"])
