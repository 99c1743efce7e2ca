"""profile_report.md/.html after every run (callbacks=default) and the profilers (conf/profiler):
the report's figures agree with the run that wrote it (real tiny fits: slow), its step table
and outliers with the steps it was given."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from bincount.callbacks.profile_report import step_outliers
from bincount.callbacks.rules.timing import StepTime
from bincount.train import train

MakeCfg = Callable[..., DictConfig]


pytestmark = pytest.mark.usefixtures("one_thread")


def row(report: str, label: str) -> str:
    match = re.search(rf"^\| {re.escape(label)} \| (.+) \|$", report, re.MULTILINE)
    assert match, f"no '{label}' row in the report"
    return match.group(1)


def number(text: str) -> float:
    return float(re.match(r"[-0-9.]+", text).group(0))  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_report_agrees_with_the_run(make_cfg: MakeCfg) -> None:
    # 48 training images in batches of 8, 2 epochs; lr=100 so that a rule fires too.
    cfg = make_cfg("profiler=simple", "model.optimizer.lr=100",
                   "rules.loss_not_decreasing.window=1", "rules.loss_not_decreasing.patience=3")
    started = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - started
    out = Path(cfg.paths.output_dir)
    report = (out / "profile_report.md").read_text()

    assert row(report, "training steps") == "12 (2 epochs)"
    assert row(report, "images") == "96"
    loop = number(row(report, "training loop (wait + compute)"))
    fit = number(row(report, "fit wall time"))
    assert 0 < loop < fit < wall
    images_per_s = number(row(report, "throughput"))
    assert images_per_s == pytest.approx(96 / loop, rel=0.02)
    assert images_per_s > 96 / wall
    assert 0 < number(row(report, "data-loading share")) < 100
    assert number(row(report, "process peak rss mib")) > 100
    # Step time percentiles are ordered; the outlier line says how many steps exceed the limit.
    compute = [float(v) for v in row(report, "compute (ms)").split(" | ")]
    assert compute[0] <= compute[1] <= compute[2] <= compute[3] <= compute[4]
    assert re.search(r"Outliers \(compute > median \+ 5·MAD = [0-9.]+ ms\): \d+ of 12 steps",
                     report)
    # The rule that fired, with its step; the profiler and where its output is.
    assert re.search(r"^\| LossNotDecreasing \| 4 \| 0 \| the mean training loss", report,
                     re.MULTILINE)
    assert f"`SimpleProfiler`, output in `{out / 'profiler'}`" in report
    assert (out / "profiler" / "fit-simple.txt").is_file()
    html = (out / "profile_report.html").read_text()
    assert "<table>" in html and "<td>LossNotDecreasing</td>" in html


class SlowStep(pl.Callback):
    """Makes one training step take ``seconds`` longer (inside the step, as a slow kernel
    or a GC pause would)."""

    def __init__(self, batch_idx: int, seconds: float) -> None:
        self.batch_idx, self.seconds = batch_idx, seconds

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == self.batch_idx:
            time.sleep(self.seconds)


@pytest.mark.slow
def test_a_slow_step_is_listed_as_an_outlier(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("trainer.max_epochs=1", "~rules")
    report = instantiate(cfg.callbacks.profile_report, output_dir=tmp_path / "report")
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[report, SlowStep(3, 2.0)],
                                      logger=False, enable_checkpointing=False)
    pl.seed_everything(0)
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))

    text = (tmp_path / "report" / "profile_report.md").read_text()
    # The injected 2 s step is listed; on a busy machine other steps may be slow too
    # (exactly which steps are outliers is step_outliers' test below).
    assert re.search(r"\d of 6 steps", text)
    outliers = dict(re.findall(r"^\| (\d+) \| 0 \| ([0-9.]+) \|", text, re.MULTILINE))
    assert float(outliers["3"]) >= 2000
    assert "None selected" in text and "No rules file configured." in text


def test_outliers_are_steps_slower_than_median_plus_k_mad() -> None:
    times = [0.10, 0.11, 0.09, 0.10, 0.11, 0.09, 0.30, 0.10]  # median 0.10, MAD 0.01
    steps = [StepTime(0, i, 0.0, t, 8) for i, t in enumerate(times)]
    median, limit, outliers = step_outliers(steps, k=5)
    assert (median, limit) == (pytest.approx(0.10), pytest.approx(0.15))
    assert [s.step for s in outliers] == [6]
    assert [s.step for s in step_outliers(steps, k=0.5)[2]] == [1, 4, 6]


def test_the_step_table_has_numpy_percentiles_and_the_slowest_outliers(
    cfg: DictConfig, tmp_path: Path
) -> None:
    report = instantiate(cfg.callbacks.profile_report, output_dir=tmp_path, max_outliers=2)
    compute = [0.001 * t for t in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)] + [0.05, 0.09, 0.07]
    report.steps = [StepTime(0, i, 0.002, t, 8) for i, t in enumerate(compute)]
    text = "\n".join(report._step_section())
    # min, p50, p90, p99, max, mean in ms (numpy's linear percentiles)
    assert row(text, "compute (ms)") == "1.0 | 7.0 | 66.0 | 87.6 | 90.0 | 20.4"
    assert row(text, "wait (ms)") == " | ".join(["2.0"] * 6)
    assert "3 of 13 steps" in text
    listed = re.findall(r"^\| (\d+) \| 0 \| ([0-9.]+) \|", text, re.MULTILINE)
    assert listed == [("11", "90.0"), ("12", "70.0")]  # the slowest two of three


@pytest.mark.parametrize("name", ["simple", "advanced", "pytorch"])
def test_each_profiler_config_builds_its_lightning_profiler(make_cfg: MakeCfg,
                                                            name: str) -> None:
    cfg = make_cfg(f"profiler={name}")
    profiler = instantiate(cfg.profiler)
    assert type(profiler).__name__.lower() == f"{name}profiler"
    assert Path(profiler.dirpath) == Path(cfg.paths.output_dir) / "profiler"
    assert "profiler" not in make_cfg()  # off unless asked for


@pytest.mark.slow
def test_the_pytorch_profiler_writes_a_trace(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("profiler=pytorch", "trainer.max_epochs=1")
    train(cfg)
    out = Path(cfg.paths.output_dir)
    traces = list((out / "profiler").glob("*.pt.trace.json"))
    assert traces, f"no trace in {out / 'profiler'}"
    assert '"traceEvents"' in traces[0].read_text()[:10000]
    assert "`PyTorchProfiler`" in (out / "profile_report.md").read_text()
