"""What every script does around its one call: user errors become a message and exit 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bincount.config import trusted_targets  # importing registers the config resolvers
from bincount.errors import BincountError

T = TypeVar("T")
log = logging.getLogger("bincount")


def run(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    try:
        with trusted_targets():
            return task(cfg)
    except (BincountError, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
