"""OmegaConf resolvers the configs use; registered when this module is imported."""

from __future__ import annotations

import os
import sys
import uuid
from datetime import datetime

from hydra.core.hydra_config import HydraConfig
from hydra.utils import execution_whitelist
from omegaconf import OmegaConf

# The only packages whose callables a config may name as `_target_`.
TRUSTED_TARGETS = ["bincount.*", "pytorch_lightning.*", "torch.optim.*"]


def trusted_targets() -> object:
    """Context in which ``instantiate`` builds only targets from TRUSTED_TARGETS."""
    return execution_whitelist(TRUSTED_TARGETS)


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
    OmegaConf.register_resolver("run_id", lambda: RUN_ID, replace=True)
    OmegaConf.register_resolver("run_dir", run_dir, replace=True)
    # Progress bars only on a terminal (not in CI logs, not in a SageMaker container).
    OmegaConf.register_resolver(
        "isatty", lambda: sys.stdout.isatty() and "SM_TRAINING_ENV" not in os.environ, replace=True
    )


register_resolvers()
