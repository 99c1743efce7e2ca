"""SageMaker Debugger's smdebug hook, registered from inside Lightning where a job has one.

A SageMaker training job with a ``DebuggerHookConfig`` finds its hook settings in
``/opt/ml/input/config/debughookconfig.json`` (or ``$SMDEBUG_CONFIG_FILE_PATH``); the built-in
Debugger rules then read the tensors the hook saves. This callback registers that hook on the
LightningModule and its loss, switching between TRAIN and EVAL modes, only when the file is
there and ``smdebug`` imports; everywhere else it does nothing (smdebug is unmaintained since
2023 and not a dependency of this project: the SageMaker launcher adds it to the container's
requirements when ``launcher.debugger.enabled=true``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

log = logging.getLogger(__name__)

HOOK_CONFIG_ENV = "SMDEBUG_CONFIG_FILE_PATH"
DEFAULT_HOOK_CONFIG = "/opt/ml/input/config/debughookconfig.json"


def hook_config_path(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Where smdebug itself looks for the job's hook configuration."""
    return Path(env.get(HOOK_CONFIG_ENV, DEFAULT_HOOK_CONFIG))


def import_smdebug() -> ModuleType | None:
    """``smdebug.pytorch``, or None (with the reason logged) where it cannot be imported."""
    try:
        import smdebug.pytorch as smd
    except Exception as err:  # ImportError, or its protobuf/NumPy incompatibilities
        log.warning("smdebug cannot be imported (%s: %s): the Debugger hook is not registered",
                    type(err).__name__, err)
        return None
    numpy2_compat()
    return smd


def numpy2_compat() -> None:
    """smdebug 1.0.34 (its last release) serializes tensors with ``ndarray.tostring()``, which
    NumPy 2.3 removed; hand its writer arrays that still have it (as ``tobytes``)."""
    if hasattr(np.ndarray, "tostring"):
        return
    import smdebug.core.writer as writer

    if getattr(writer.make_tensor_proto, "numpy2_compat", False):
        return
    original = writer.make_tensor_proto

    class _Array(np.ndarray):
        def tostring(self) -> bytes:
            return self.tobytes()

    def make_tensor_proto(nparray_data: np.ndarray, tag: str) -> Any:
        return original(nparray_data=np.asarray(nparray_data).view(_Array), tag=tag)

    make_tensor_proto.numpy2_compat = True  # type: ignore[attr-defined]
    writer.make_tensor_proto = make_tensor_proto


class SmdebugHook(pl.Callback):
    """Registers smdebug's PyTorch hook for the fit: the module's weights, gradients and
    outputs, and the cross-entropy loss (the module's loss over the counts) in TRAIN and EVAL
    mode, as SageMaker's built-in rules (LossNotDecreasing, Overfit, ...) expect them."""

    def __init__(self, config_path: str | Path | None = None) -> None:
        self.config_path = Path(config_path) if config_path else None
        self.hook: Any = None
        self.modes: Any = None
        self.criterion = nn.CrossEntropyLoss()
        self.logits: torch.Tensor | None = None
        self._handle: Any = None

    @property
    def active(self) -> bool:
        return self.hook is not None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.hook is not None:
            return
        path = self.config_path or hook_config_path()
        if not path.is_file():
            log.debug("no smdebug hook config at %s: the Debugger hook stays off", path)
            return
        smd = import_smdebug()
        if smd is None:
            return
        self.hook = smd.Hook.create_from_json_file(str(path))
        self.modes = smd.modes
        self.hook.register_module(pl_module)
        self.hook.register_loss(self.criterion)
        self._handle = pl_module.register_forward_hook(self._keep_logits)
        log.info("smdebug hook registered from %s", path)

    def _keep_logits(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.logits = output if isinstance(output, torch.Tensor) else None

    def _record_loss(self, batch: Any) -> None:
        """Feed the registered loss module, which is how smdebug sees a loss."""
        if self.logits is None or not isinstance(batch, dict) or "label" not in batch:
            return
        labels = batch["label"]
        if len(labels) and len(labels) == len(self.logits):
            with torch.no_grad():
                self.criterion(self.logits.detach(), labels)
        self.logits = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:
            self.hook.set_mode(self.modes.TRAIN)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.active:
            self._record_loss(batch)

    def on_validation_epoch_start(self, trainer: pl.Trainer,
                                  pl_module: pl.LightningModule) -> None:
        if self.active:
            self.hook.set_mode(self.modes.EVAL)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self.active:
            self._record_loss(batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer,
                                pl_module: pl.LightningModule) -> None:
        if self.active:
            self.hook.set_mode(self.modes.TRAIN)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.active:
            self._handle.remove()
            self.hook.close()
            self.hook = None
