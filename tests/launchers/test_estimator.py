"""What the estimator is built from: the metric definitions (from the names the MetricLines
callback is configured with) and the distribution (torchrun for several GPUs or instances).
The request the estimator sends is checked in test_sagemaker.py."""

from __future__ import annotations

import re

import pytest
from omegaconf import DictConfig, open_dict

from bincount.launchers.estimator import distribution, metric_definitions, metric_names
from bincount.launchers.settings import LauncherSettings
from tests.support.aws import fake_credentials, with_settings


def test_metric_definitions_parse_the_lines_of_the_configured_metrics(job_cfg: DictConfig) -> None:
    names = list(job_cfg.callbacks.metric_lines.names)
    definitions = metric_definitions(metric_names(job_cfg))

    assert [d["Name"] for d in definitions] == names
    for d in definitions:  # what MetricLines prints each epoch, and nan when a loss diverges
        assert re.search(d["Regex"], f"epoch=3 {d['Name']}=0.812345").group(1) == "0.812345"
        assert re.search(d["Regex"], f"epoch=4 {d['Name']}=nan").group(1) == "nan"
    val_loss = definitions[names.index("val_loss")]["Regex"]
    assert re.findall(val_loss, "epoch=0 val_loss=0.9\nbest val_loss=0.500000") == ["0.9",
                                                                                  "0.500000"]
    renamed = with_settings(job_cfg, "callbacks.metric_lines.names=[val_loss,val_mae]")
    assert metric_names(renamed) == ["val_loss", "val_mae"]


def test_without_the_metric_lines_callback_no_metric_is_defined(job_cfg: DictConfig) -> None:
    cfg = job_cfg.copy()
    with open_dict(cfg):
        cfg.callbacks.pop("metric_lines")
    assert metric_names(cfg) == []


@pytest.mark.parametrize(("instance_type", "count", "distributed"), [
    ("ml.g4dn.xlarge", 1, False),     # one GPU: a plain process
    ("ml.g4dn.12xlarge", 1, True),    # four GPUs: torchrun, DDP
    ("ml.g4dn.xlarge", 2, True),      # two instances: torchrun on each, DDP
])
def test_several_gpus_or_instances_run_torch_distributed(
    job_cfg: DictConfig, monkeypatch: pytest.MonkeyPatch, instance_type: str, count: int,
    distributed: bool,
) -> None:
    fake_credentials(monkeypatch)
    settings = LauncherSettings.from_cfg(with_settings(
        job_cfg, f"launcher.instance_type={instance_type}", f"launcher.instance_count={count}"))
    expected = {"torch_distributed": {"enabled": True}} if distributed else None
    assert distribution(settings) == expected
