"""What every rule shares: fire once, say what it saw, keep a record, optionally stop the run.

A rule that fires logs one warning, appends an entry to ``rules.json`` (rule, step, epoch,
message, evidence) and writes a text entry to TensorBoard. While it watches, it logs the scalar
it judges by (``rules/<rule>/<quantity>``) to every logger, so the warning can be read against
the curve that caused it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from bincount.errors import BincountError
from bincount.files import write_json_atomic

log = logging.getLogger("bincount.rules")


def plain(value: Any) -> Any:
    """JSON-safe evidence: floats rounded, NaN/Inf as strings (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else str(value)
    return value


def read_rules_file(path: Path) -> list[dict[str, Any]]:
    """The entries of a rules.json (an absent file has none)."""
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BincountError(
            f"{path}: not valid JSON ({err}); move it away to start afresh"
        ) from err
    if not isinstance(entries, list):
        raise BincountError(f"{path}: expected a JSON list of rule entries")
    return entries


def append_entry(path: Path, entry: dict[str, Any]) -> None:
    """Add one entry to rules.json; the file is replaced whole, never left half-written."""
    write_json_atomic(path, [*read_rules_file(path), entry])


class Rule(pl.Callback):
    """A named check on the training loop that fires at most once per run.

    ``rules_file`` is where entries go (None: log and TensorBoard only); with ``stop_training``
    a firing rule ends the fit after the current step, as early stopping does. Every rule's
    settings come from ``conf/rules/default.yaml`` (the one source: no defaults here).
    """

    name: ClassVar[str] = "Rule"
    # Whether a run this rule stopped has no usable model (a diverged loss, NaN weights), or
    # just ended early with its best checkpoint intact (Overfit, Overtraining: early stopping).
    stop_is_failure: ClassVar[bool] = True

    def __init__(self, *, rules_file: str | Path | None, stop_training: bool) -> None:
        self.rules_file = Path(rules_file) if rules_file else None
        self.stop_training = stop_training
        self.fired = False

    def state_dict(self) -> dict[str, Any]:
        # A resumed run does not warn again about what its first part already reported.
        return {"fired": self.fired}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fired = bool(state_dict.get("fired", False))

    def decide(self, trainer: pl.Trainer, triggered: bool) -> bool:
        """One decision for all processes when the rule can stop training: under DDP a rank
        that stopped alone would leave the others waiting in a collective."""
        if self.stop_training and trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(triggered, all=False))
        return triggered

    def fire(self, trainer: pl.Trainer, message: str, evidence: Mapping[str, Any]) -> None:
        if self.fired:
            return
        self.fired = True
        entry = {
            "rule": self.name,
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "message": message,
            "evidence": plain(dict(evidence)),
            "stopped_training": self.stop_training,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if trainer.is_global_zero:
            log.warning("rule %s fired at step %d (epoch %d): %s", self.name,
                        trainer.global_step, trainer.current_epoch, message)
            if self.rules_file is not None:
                append_entry(self.rules_file, entry)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    text = f"**{message}**\n\n```\n{json.dumps(entry['evidence'], indent=2)}\n```"
                    logger.experiment.add_text(f"rules/{self.name}", text, trainer.global_step)
        if self.stop_training:
            if trainer.is_global_zero:
                log.error("rule %s stops training at step %d", self.name, trainer.global_step)
            trainer.should_stop = True

    def log_scalars(self, trainer: pl.Trainer, values: Mapping[str, float],
                    every_step: bool = False) -> None:
        """The quantities the rule judges by, at the trainer's logging cadence."""
        step = trainer.global_step
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        if not every_step and step % max(1, trainer.log_every_n_steps) != 0:
            return
        metrics = {f"rules/{self.name}/{k}": float(v) for k, v in values.items()
                   if math.isfinite(float(v))}
        if metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The file exists from the start of every fit, so "no rule fired" reads as `[]`.
        if trainer.is_global_zero and self.rules_file is not None and not self.rules_file.exists():
            write_json_atomic(self.rules_file, [])
