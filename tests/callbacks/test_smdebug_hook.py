"""The SageMaker Debugger hook callback (``bincount.callbacks.smdebug_hook``) outside a job with
a hook config, or without smdebug: a no-op, and training runs as usual. With smdebug installed it
records tensors: tests/e2e/test_smdebug_hook.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from tests.support.aws import hook_config


def fit_with_hook(cfg: DictConfig, hook: Any) -> None:
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    trainer = instantiate(cfg.trainer, callbacks=[hook], logger=False,
                          enable_checkpointing=False, limit_train_batches=2,
                          limit_val_batches=1, max_epochs=1)
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    assert isinstance(trainer, pl.Trainer)


def test_the_smdebug_callback_is_a_no_op_without_a_hook_config(
    make_cfg: Any, tmp_path: Path, one_thread: None
) -> None:
    from bincount.callbacks.smdebug_hook import SmdebugHook

    hook = SmdebugHook(config_path=tmp_path / "absent" / "debughookconfig.json")
    fit_with_hook(make_cfg(), hook)
    assert not hook.active


def test_the_smdebug_callback_is_a_no_op_without_smdebug(
    make_cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, one_thread: None,
) -> None:
    import importlib.util

    from bincount.callbacks.smdebug_hook import HOOK_CONFIG_ENV, SmdebugHook

    if importlib.util.find_spec("smdebug") is not None:
        pytest.skip("smdebug is installed in this environment")
    # The job has a hook config (found through the variable smdebug itself reads) ...
    monkeypatch.setenv(HOOK_CONFIG_ENV, str(hook_config(tmp_path / "hook.json",
                                                        tmp_path / "tensors")))
    hook = SmdebugHook()
    fit_with_hook(make_cfg(), hook)  # ... but no smdebug: training runs as usual
    assert not hook.active
    assert "smdebug cannot be imported (ModuleNotFoundError" in caplog.text
    assert not (tmp_path / "tensors").exists()
