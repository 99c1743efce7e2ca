"""OmegaConf resolvers the configs use; registered when this module is imported."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bincount.errors import BincountError

# The only callables a config may name as `_target_` (a config is code: a `_target_` of
# `os.system` would run). Hydra's own node (its plugins) is Hydra's business.
TRUSTED_TARGETS = ("bincount.*", "pytorch_lightning.*", "torch.optim.*",
                   "optuna.samplers.*", "optuna.pruners.*")


def check_targets(cfg: DictConfig) -> None:
    """Refuse a config that names a ``_target_`` outside TRUSTED_TARGETS, naming its key."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    for key, target in _targets(tree, ""):
        if key.startswith("hydra."):
            continue
        if not isinstance(target, str) or not any(fnmatchcase(target, p)
                                                  for p in TRUSTED_TARGETS):
            raise BincountError(f"{key}: {target!r} is not a trusted target (expected one of "
                                f"{', '.join(TRUSTED_TARGETS)})")


def check_paths(cfg: DictConfig) -> None:
    """Every ``paths.*`` location is a directory: one that is a file is refused, naming it."""
    for key, value in (cfg.get("paths") or {}).items():
        if isinstance(value, str) and os.path.isfile(value):
            raise BincountError(f"paths.{key}: {value} is a file; expected a directory")


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, except that a user's mistake found by the object being
    built (a BincountError naming the key) reaches the user as itself, not wrapped in Hydra's
    InstantiationException."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, BincountError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def _targets(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{where}[{i}]")


# One id per process: a timestamp plus a random suffix, so two runs started in the same
# second still get their own directories.
RUN_ID = f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{uuid.uuid4().hex[:6]}"


def run_dir(base: str) -> str:
    """A run's output dir: Hydra's job dir once Hydra has set it (a multirun job, a DDP
    worker started with the parent's dir), else ``<base>/runs/<RUN_ID>``."""
    try:
        runtime = HydraConfig.get().runtime
    except ValueError:  # composed outside a Hydra app (tests, notebooks)
        runtime = None
    if runtime is not None and not OmegaConf.is_missing(runtime, "output_dir"):
        return str(runtime.output_dir)
    return f"{base}/runs/{RUN_ID}"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("run_id", lambda: RUN_ID, replace=True)
    OmegaConf.register_new_resolver("run_dir", run_dir, replace=True)
    # Progress bars only on a terminal (not in CI logs, not in a SageMaker container).
    OmegaConf.register_new_resolver(
        "isatty", lambda: sys.stdout.isatty() and "SM_TRAINING_ENV" not in os.environ, replace=True
    )


register_resolvers()
