"""Run the training in this process, on this machine's CPU or GPU(s)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from bincount.train import train


class LocalLauncher:
    def run(self, cfg: DictConfig) -> dict[str, Any]:
        return train(cfg)
