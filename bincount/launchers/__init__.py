"""Launchers: where ``train(cfg)`` runs. ``launch(cfg)`` builds the one the config selects."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


def launch(cfg: DictConfig) -> Any:
    return instantiate(cfg.launcher).run(cfg)
