"""``launcher.debugger`` -> the SageMaker estimator's Debugger arguments, checked on the
CreateTrainingJob request a real SDK v2 PyTorch estimator sends (to moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from bincount.aws import make_session
from bincount.errors import BincountError
from bincount.launchers.debugger import debugger_kwargs, debugger_requirements
from tests.sagemaker_support import moto_bucket

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
BUCKET = "bincount-test-debugger"
ROLE = "arn:aws:iam::123456789012:role/bincount-sagemaker"
DEBUGGER_RULES = {"VanishingGradient", "ExplodingTensor", "PoorWeightInitialization",
                  "LossNotDecreasing", "Overfit", "Overtraining"}


def debugger_cfg(*overrides: str) -> DictConfig:
    """The shipped conf/launcher/debugger/default.yaml with overrides."""
    with initialize_config_dir(str(ROOT / "conf" / "launcher" / "debugger"), version_base="1.3"):
        return compose("default", overrides=list(overrides))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with moto_bucket(monkeypatch, BUCKET):
        yield


def submit(tmp_path: Path, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Submit a training job with these Debugger kwargs; the CreateTrainingJob body as sent."""
    from sagemaker.pytorch import PyTorch

    boto_session = boto3.Session(region_name=REGION)
    sent: dict[str, Any] = {}

    def record(params: dict, **_: Any) -> None:
        sent.update(json.loads(params["body"]))

    boto_session.events.register("before-call.sagemaker.CreateTrainingJob", record)
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("print('the entry point')\n")
    estimator = PyTorch(
        entry_point="train.py", source_dir=str(source), role=ROLE,
        instance_type="ml.g4dn.xlarge", instance_count=1,
        framework_version="2.6.0", py_version="py312",
        output_path=f"s3://{BUCKET}/jobs", sagemaker_session=make_session(
            boto_session=boto_session),
        **kwargs,
    )
    estimator.fit(wait=False, logs=False, job_name="bincount-debugger-test")
    assert sent, "no CreateTrainingJob request was sent"
    return sent


# The SDK validates its defaults config against its JSON schema on every lookup (~0.3 s each,
# dozens per job submission): each submission takes 5-20 s, hence slow.
@pytest.mark.slow
def test_enabled_debugger_sends_rules_hook_and_profiler(aws: None, tmp_path: Path) -> None:
    cfg = debugger_cfg("enabled=true", "+rules.overfit.patience_validation=5")
    request = submit(tmp_path, debugger_kwargs(cfg))

    rules = {r["RuleConfigurationName"]: r for r in request["DebugRuleConfigurations"]}
    assert set(rules) == DEBUGGER_RULES
    assert rules["Overfit"]["RuleParameters"]["patience_validation"] == "5"
    assert rules["VanishingGradient"]["RuleParameters"]["threshold"] == "1e-07"
    for rule in rules.values():  # the rule evaluator image of the job's region
        assert f".dkr.ecr.{REGION}.amazonaws.com/" in rule["RuleEvaluatorImage"]
    # exploding_tensor stops the job through the StopTraining action.
    action = rules["ExplodingTensor"]["RuleParameters"]["action_json"]
    assert "stoptraining" in action and "bincount-debugger-test" in action
    assert "action_json" not in rules["Overfit"]["RuleParameters"]

    profiler_rules = {r["RuleConfigurationName"].split("-")[0]: r
                      for r in request["ProfilerRuleConfigurations"]}
    assert {"ProfilerReport", "LowGPUUtilization"} <= set(profiler_rules)
    assert profiler_rules["LowGPUUtilization"]["RuleParameters"]["threshold_p95"] == "70"

    hook = request["DebugHookConfig"]
    assert hook["S3OutputPath"] == f"s3://{BUCKET}/jobs"
    assert hook["HookParameters"] == {"save_interval": "100"}
    collections = {c["CollectionName"]: c.get("CollectionParameters")
                   for c in hook["CollectionConfigurations"]}
    assert {"losses", "gradients", "weights"} <= set(collections)
    assert collections["losses"] == {"save_interval": "10"}

    profiler = request["ProfilerConfig"]
    assert profiler["S3OutputPath"] == f"s3://{BUCKET}/jobs"
    assert profiler["ProfilingIntervalInMilliseconds"] == 500
    assert not profiler.get("DisableProfiler", False)
    assert debugger_requirements(cfg) == ["smdebug==1.0.34"]


@pytest.mark.slow
def test_disabled_debugger_sends_none_of_it(aws: None, tmp_path: Path) -> None:
    cfg = debugger_cfg()  # the default: off
    request = submit(tmp_path, debugger_kwargs(cfg))

    for key in ("DebugRuleConfigurations", "ProfilerRuleConfigurations", "DebugHookConfig"):
        assert key not in request, key
    assert request.get("ProfilerConfig", {"DisableProfiler": True}) == {"DisableProfiler": True}
    assert debugger_requirements(cfg) == []


@pytest.mark.slow
def test_unset_debugger_kwargs_would_let_the_sdk_attach_a_hook(aws: None,
                                                                tmp_path: Path) -> None:
    """Why "off" is explicit: with no Debugger arguments the SDK adds a hook and a profiler."""
    request = submit(tmp_path, {})
    assert "DebugHookConfig" in request
    assert not request["ProfilerConfig"].get("DisableProfiler", False)


def test_a_rule_can_be_switched_off_and_unknown_rules_are_named() -> None:
    kwargs = debugger_kwargs(debugger_cfg("enabled=true", "rules.overtraining=null",
                                          "profiler_rules.LowGPUUtilization=null"))
    names = [r.name for r in kwargs["rules"]]
    assert "Overtraining" not in names and "LowGPUUtilization" not in names
    assert "Overfit" in names and "ProfilerReport" in names

    with pytest.raises(BincountError, match=r"launcher\.debugger\.rules\.overfitting: .*overfit"):
        debugger_kwargs(debugger_cfg("enabled=true", "+rules.overfitting={}"))
    with pytest.raises(BincountError, match=r"profiler_rules\.LowGpu: .*LowGPUUtilization"):
        debugger_kwargs(debugger_cfg("enabled=true", "+profiler_rules.LowGpu={}"))
    with pytest.raises(BincountError, match=r"stop_training_on: \['overfit'\]"):
        debugger_kwargs(OmegaConf.merge(debugger_cfg("enabled=true", "rules.overfit=null"),
                                        {"stop_training_on": ["overfit"]}))


# --- the smdebug hook callback (bincount.callbacks.smdebug_hook) ---------------------------

SMDEBUG = ("smdebug==1.0.34", "tensorboard>=2.15")  # as the container's requirements resolve


def hook_config(path: Path, out_dir: Path) -> Path:
    """A debughookconfig.json as SageMaker writes it for a job with a DebuggerHookConfig."""
    path.write_text(json.dumps({
        "LocalPath": str(out_dir),
        "HookParameters": {"save_interval": "1"},
        "CollectionConfigurations": [
            {"CollectionName": "losses", "CollectionParameters": {"save_interval": "1"}},
            {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "2"}},
        ],
    }))
    return path



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


def smdebug_venv() -> Path:
    """A virtualenv with smdebug (made once under ~/.cache/bincount) that borrows everything
    else from the project's environment through a .pth file, as test_serving_toolkit does."""
    import hashlib
    import os
    import subprocess
    import sys
    import sysconfig

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bincount"
    tag = hashlib.sha256("\n".join((sys.executable, *SMDEBUG)).encode()).hexdigest()[:12]
    venv = cache / f"smdebug-{tag}"
    if (venv / "ready").is_file():
        return venv
    import shutil

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
    import math
    import os
    import subprocess

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
