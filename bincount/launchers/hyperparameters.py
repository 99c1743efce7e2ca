"""The user's Hydra overrides -> a SageMaker job's hyperparameters, one per override.

The container side (``container``) turns the ``--key value`` arguments the toolkit makes of them
back into the same overrides. Overrides of the launcher, of Hydra and of the locations stay on
this side; the rest are checked against SageMaker's limits and composed as the container will
compose them, before anything is uploaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bincount.errors import BincountError
from bincount.overrides import override_key, split_override, top_key

log = logging.getLogger(__name__)

CONFIG_NAME = "train"
# Override keys (and their children) that stay on this side: the launcher's own settings,
# Hydra's, and the locations, which the container sets from SM_* variables.
LOCAL_ONLY = ("launcher", "hydra", "paths")
# Your own bins' locations on this machine: in the job they are the channel (conf/data/*.yaml).
LOCAL_DATA = ("data.root", "data.table")
# CreateTrainingJob limits: at most 100 hyperparameters, keys up to 256 characters, values
# up to 2500. The SDK adds its own sagemaker_* ones (program, submit directory, log level,
# job name, region, distribution): room is kept for them.
MAX_HYPERPARAMETERS = 100
SDK_HYPERPARAMETERS = 8
MAX_KEY_LENGTH = 256
MAX_VALUE_LENGTH = 2500
RESERVED_PREFIX = "sagemaker_"


def task_overrides() -> list[str]:
    """The command line's overrides (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def job_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that travel to the job (not launcher.*, hydra.*, paths.*, data.root,
    data.table)."""
    def local(override: str) -> bool:
        return top_key(override) in LOCAL_ONLY or override_key(override) in LOCAL_DATA

    kept = [o for o in overrides if not local(o)]
    dropped = [o for o in overrides if local(o) and top_key(o) != "launcher"]
    if dropped:
        log.info("not sent to the job (the container sets its own locations): %s",
                 " ".join(dropped))
    return kept


def to_hyperparameters(overrides: Sequence[str]) -> dict[str, str]:
    """One hyperparameter per override: its key (with any ``+``/``++``/``~`` prefix) -> its
    value as typed. Checked against SageMaker's limits."""
    try:
        OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise BincountError(f"override: {err}") from err
    hyperparameters: dict[str, str] = {}
    for override in overrides:
        key, value = split_override(override)
        if override_key(override).startswith(RESERVED_PREFIX):
            raise BincountError(f"override {override!r}: keys starting with "
                                f"{RESERVED_PREFIX!r} are reserved by SageMaker")
        if len(key) > MAX_KEY_LENGTH:
            raise BincountError(f"override {override!r}: SageMaker allows hyperparameter names "
                                f"of at most {MAX_KEY_LENGTH} characters")
        # The SDK sends every value JSON-encoded; the limit applies to what is sent.
        sent = len(json.dumps(value))
        if sent > MAX_VALUE_LENGTH:
            raise BincountError(f"override {key}: SageMaker allows hyperparameter values of at "
                                f"most {MAX_VALUE_LENGTH} characters, this one has {sent}")
        hyperparameters[key] = value
    room = MAX_HYPERPARAMETERS - SDK_HYPERPARAMETERS
    if len(hyperparameters) > room:
        raise BincountError(f"{len(hyperparameters)} overrides: a SageMaker job takes at most "
                            f"{room} (100 hyperparameters, some used by the SDK); move some into "
                            "a config file (conf/experiment/<name>.yaml) and select it")
    return hyperparameters


def check_overrides(overrides: Sequence[str], conf_dir: Path) -> DictConfig:
    """Compose the training config with ``overrides`` as the container will: an override of a
    key that does not exist stops here, before anything is uploaded."""
    try:
        if GlobalHydra.instance().is_initialized():  # inside a script's Hydra app
            return compose(CONFIG_NAME, overrides=list(overrides))
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            return compose(CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise BincountError(f"the overrides do not compose the training config: {err}") from err
