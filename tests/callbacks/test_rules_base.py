"""What every rule shares (bincount/callbacks/rules/base.py): it fires once, records the entry
in rules.json, warns, writes TensorBoard text, stops the run only when told to, and a resumed
run remembers that it fired. Also: the rules config is the one source of the rules' settings."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bincount.callbacks.figures
import bincount.callbacks.metric_lines
import bincount.callbacks.profile_report
import bincount.callbacks.rules
from bincount.callbacks.rules import Overfit, VanishingGradient, read_rules_file
from bincount.callbacks.rules.base import Rule
from bincount.errors import BincountError
from bincount.train import instantiate_group
from tests.callbacks.harness import fake_trainer

MakeCfg = Callable[..., DictConfig]

RULES = {"VanishingGradient", "ExplodingTensor", "PoorWeightInitialization", "LossDivergence",
         "LossNotDecreasing", "Overfit", "Overtraining", "DataLoaderBound", "LowGPUUtilization"}


class Probe(Rule):
    name = "Probe"


def test_a_rule_fires_once_into_rules_json_the_log_and_tensorboard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules_file = tmp_path / "run" / "rules.json"
    logger = TensorBoardLogger(str(tmp_path / "run"), name="tensorboard", version="")
    trainer = fake_trainer(global_step=7, current_epoch=2, loggers=[logger])
    probe = Probe(rules_file=rules_file, stop_training=False)
    probe.on_fit_start(trainer, None)  # type: ignore[arg-type]
    assert read_rules_file(rules_file) == []  # "none fired" reads as []

    caplog.set_level(logging.WARNING, logger="bincount.rules")
    probe.fire(trainer, "first", {"x": 1.23456789, "bad": float("nan"), "xs": (1.0, 2)})
    probe.fire(trainer, "second", {})  # a rule speaks once per run
    logger.experiment.flush()

    (entry,) = json.loads(rules_file.read_text())
    assert entry["rule"] == "Probe" and (entry["step"], entry["epoch"]) == (7, 2)
    assert entry["message"] == "first" and entry["stopped_training"] is False
    assert entry["evidence"] == {"x": 1.23457, "bad": "nan", "xs": [1.0, 2]}
    assert [r.getMessage() for r in caplog.records] == [
        "rule Probe fired at step 7 (epoch 2): first"]
    assert not trainer.should_stop
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "rules/Probe/text_summary" in events.Tags()["tensors"]


def test_entries_of_several_rules_accumulate_and_stop_when_told(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.json"
    trainer = fake_trainer()
    Probe(rules_file=rules_file, stop_training=False).fire(trainer, "a", {})
    stopper = Probe(rules_file=rules_file, stop_training=True)
    stopper.fire(trainer, "b", {})
    assert [e["message"] for e in read_rules_file(rules_file)] == ["a", "b"]
    assert read_rules_file(rules_file)[1]["stopped_training"] is True
    assert trainer.should_stop


def test_a_resumed_run_does_not_fire_again(tmp_path: Path) -> None:
    first = Probe(rules_file=tmp_path / "rules.json", stop_training=False)
    first.fire(fake_trainer(), "once", {})
    resumed = Probe(rules_file=tmp_path / "rules.json", stop_training=False)
    resumed.load_state_dict(first.state_dict())
    resumed.fire(fake_trainer(global_step=9), "again", {})
    assert [e["message"] for e in read_rules_file(tmp_path / "rules.json")] == ["once"]


def test_rules_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "rules.json"
    bad.write_text("{not json")
    with pytest.raises(BincountError, match=f"{bad}: not valid JSON"):
        read_rules_file(bad)
    bad.write_text('{"rule": "Overfit"}')
    with pytest.raises(BincountError, match="expected a JSON list"):
        read_rules_file(bad)
    assert read_rules_file(tmp_path / "absent.json") == []


def test_rules_are_switched_off_one_by_one_or_all(make_cfg: MakeCfg) -> None:
    names = {type(r).__name__ for r in instantiate_group(make_cfg().rules)}
    assert names == RULES
    off = instantiate_group(make_cfg("rules.overfit=null").rules)
    assert not any(isinstance(r, Overfit) for r in off) and len(off) == len(RULES) - 1
    tuned = instantiate_group(make_cfg("rules.vanishing_gradient.threshold=0.01").rules)
    assert next(r for r in tuned if isinstance(r, VanishingGradient)).threshold == 0.01
    cfg = make_cfg("~rules")
    assert "rules" not in cfg
    assert instantiate(cfg.callbacks.profile_report).rules_file is None


def test_every_setting_comes_from_the_config(make_cfg: MakeCfg) -> None:
    """The YAML is the one source: no callback restates a default in its signature, and the
    config names every parameter (a missing one would be a TypeError at instantiate)."""
    cfg = make_cfg()
    entries = {**cfg.rules, **cfg.callbacks}
    modules = (bincount.callbacks.rules, bincount.callbacks.metric_lines,
               bincount.callbacks.profile_report, bincount.callbacks.figures)
    checked = 0
    for entry in entries.values():
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            continue
        module, _, name = entry._target_.rpartition(".")
        if not any(module.startswith(m.__name__) for m in modules):
            continue
        params = inspect.signature(getattr(__import__(module, fromlist=[name]), name)).parameters
        given = set(OmegaConf.to_container(entry)) - {"_target_"}
        assert {p for p in params if p != "self"} == given, entry._target_
        assert all(p.default is inspect.Parameter.empty for p in params.values()), name
        checked += 1
    assert checked == len(RULES) + 3  # + metric lines, validation figures, profile report

