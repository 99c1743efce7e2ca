"""The SageMaker Debugger hook callback with smdebug installed, as in a job with
``launcher.debugger.enabled=true``: it records the train and eval losses and the gradients
that SageMaker's rules read. smdebug (unmaintained, pinning an old protobuf) is installed once
into a virtualenv under ~/.cache/bincount that borrows everything else from this environment."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from tests.support.aws import hook_config
from tests.support.paths import ROOT

SMDEBUG = ("smdebug==1.0.34", "tensorboard>=2.15")  # as the container's requirements resolve


def smdebug_venv() -> Path:
    """A virtualenv with smdebug (made once under ~/.cache/bincount) that borrows everything
    else from the project's environment through a .pth file, as test_serving_toolkit does."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bincount"
    tag = hashlib.sha256("\n".join((sys.executable, *SMDEBUG)).encode()).hexdigest()[:12]
    venv = cache / f"smdebug-{tag}"
    if (venv / "ready").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(purelib, "bincount_project_site.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *SMDEBUG],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"smdebug does not install here: {done.stderr.strip()[-500:]}")
    (venv / "ready").write_text("\n".join(SMDEBUG) + "\n")
    return venv


SMDEBUG_RUN = """
import json, sys
from hydra.utils import instantiate
from omegaconf import OmegaConf
from bincount.callbacks.smdebug_hook import SmdebugHook
import smdebug.pytorch as smd
from smdebug.trials import create_trial

cfg = OmegaConf.load(sys.argv[1])
hook = SmdebugHook()
trainer = instantiate(cfg.trainer, callbacks=[hook], logger=False,
                      enable_checkpointing=False, limit_train_batches=3,
                      limit_val_batches=2, max_epochs=2)
trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
trial = create_trial(sys.argv[2])
losses = {}
for name in trial.tensor_names(collection="losses"):
    tensor = trial.tensor(name)
    losses[name] = {mode: {str(s): float(tensor.value(s, mode=getattr(smd.modes, mode)))
                           for s in tensor.steps(mode=getattr(smd.modes, mode))}
                    for mode in ("TRAIN", "EVAL")}
print("RESULT " + json.dumps({"losses": losses,
                             "gradients": len(trial.tensor_names(collection="gradients"))}))
"""


@pytest.mark.slow
def test_with_smdebug_the_callback_records_train_and_eval_losses(make_cfg: Any,
                                                                 tmp_path: Path) -> None:
    from bincount.callbacks.smdebug_hook import HOOK_CONFIG_ENV

    venv = smdebug_venv()
    cfg = make_cfg()
    OmegaConf.save(cfg, tmp_path / "cfg.yaml", resolve=True)
    (tmp_path / "run.py").write_text(SMDEBUG_RUN)
    tensors = tmp_path / "tensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           HOOK_CONFIG_ENV: str(hook_config(tmp_path / "hook.json", tensors))}
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(tmp_path / "run.py"), str(tmp_path / "cfg.yaml"),
         str(tensors)], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])

    (name, modes), = result["losses"].items()
    assert name.startswith("CrossEntropyLoss")
    # 2 epochs x 3 training steps; the validation set is one batch: the sanity check's and
    # one per epoch.
    assert len(modes["TRAIN"]) == 6
    assert len(modes["EVAL"]) == 3
    assert all(math.isfinite(v) and v > 0 for mode in modes.values() for v in mode.values())
    assert result["gradients"] > 10  # and the module's gradients, for VanishingGradient & co.
