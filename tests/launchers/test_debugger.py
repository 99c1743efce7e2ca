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
from tests.support.aws import REGION, ROLE, moto_bucket
from tests.support.paths import CONF

BUCKET = "bincount-test-debugger"
DEBUGGER_RULES = {"VanishingGradient", "ExplodingTensor", "PoorWeightInitialization",
                  "LossNotDecreasing", "Overfit", "Overtraining"}


def debugger_cfg(*overrides: str) -> DictConfig:
    """The shipped conf/launcher/debugger/default.yaml with overrides."""
    with initialize_config_dir(str(CONF / "launcher" / "debugger"), version_base="1.3"):
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
