"""What every script does around its one call: user errors become a message and exit 2."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bincount.config import check_paths, check_targets  # importing registers the resolvers
from bincount.errors import BincountError

T = TypeVar("T")
log = logging.getLogger("bincount")
HYDRA_VERSION_BASE = "1.3"  # Hydra's current defaults (no chdir, no deprecation warning)


def run(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    try:
        check_targets(cfg)
        check_paths(cfg)
        return task(cfg)
    except (BincountError, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(getattr(err, "exit_code", 2))


def refuse_null_groups(argv: Sequence[str], conf_dir: Path) -> None:
    """Catch ``<group>=null``, which Hydra answers with a traceback that names nothing (a group
    is removed with ``~<group>``). Exit 2 with the fix."""
    for arg in argv:
        group, _, value = arg.partition("=")
        if value == "null" and group and (conf_dir / group).is_dir():
            choices = ", ".join(sorted(p.stem for p in (conf_dir / group).glob("*.yaml")))
            print(f"error: {arg}: '{group}' is a config group; remove it with '~{group}' "
                  f"(quoted in the shell) or choose one of: {choices}", file=sys.stderr)
            sys.exit(2)


def hydra_main(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``hydra.main`` over ``conf/<config_name>.yaml`` for a script in ``scripts/``, with the
    command line checked by ``refuse_null_groups`` before Hydra parses it."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        # Relative to the script's file, as Hydra resolves config_path: scripts/ -> conf/.
        conf_dir = Path(inspect.getfile(task)).resolve().parent.parent / "conf"
        hydra_task = hydra.main(config_path="../conf", config_name=config_name,
                                 version_base=HYDRA_VERSION_BASE)(task)

        @functools.wraps(task)
        def main() -> Any:
            refuse_null_groups(sys.argv[1:], conf_dir)
            return hydra_task()

        return main

    return decorate

