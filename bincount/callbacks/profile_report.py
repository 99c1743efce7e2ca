"""``<output_dir>/profile_report.md`` (and ``.html``) after every fit: the local counterpart of
SageMaker Debugger's profiler report.

It times every training step itself (a few microseconds per step, whatever ``profiler=`` is
set to): step time distribution and outliers, the share of time spent waiting for data,
throughput, peak memory, and the rules that fired. With a Lightning profiler selected it also
says where that profiler's output went.
"""

from __future__ import annotations

import logging
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import markdown
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import PassThroughProfiler, PyTorchProfiler

from bincount.callbacks.rules.base import read_rules_file
from bincount.callbacks.rules.timing import StepClock, StepTime, StepTimer
from bincount.files import write_text_atomic

log = logging.getLogger(__name__)


def step_outliers(steps: list[StepTime], k: float) -> tuple[float, float, list[StepTime]]:
    """Steps whose compute time exceeds median + k·MAD (MAD: median absolute deviation)."""
    times = [s.compute for s in steps]
    median = statistics.median(times)
    mad = statistics.median(abs(t - median) for t in times)
    limit = median + k * mad
    return median, limit, [s for s in steps if s.compute > limit]


def peak_memory() -> dict[str, float]:
    """Peak memory in MiB: the CUDA allocator's (since the fit started) where a GPU is used,
    and this process's peak resident set (since it started)."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = {"process_peak_rss_mib": rss_kib / (1024 * 1024 if sys.platform == "darwin" else 1024)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


class ProfileReport(StepTimer):
    """Times the training loop and writes the report when the fit ends (``outlier_k``: the k
    in median + k·MAD; ``max_outliers``: rows of the outlier table; ``html``: also write the
    HTML twin). Settings come from ``conf/callbacks/default.yaml``."""

    def __init__(self, *, output_dir: str | Path, rules_file: str | Path | None,
                 outlier_k: float, max_outliers: int, html: bool) -> None:
        self.output_dir = Path(output_dir)
        self.rules_file = Path(rules_file) if rules_file else None
        self.outlier_k, self.max_outliers, self.html = outlier_k, max_outliers, html
        self.clock = StepClock()
        self.steps: list[StepTime] = []
        self.fit_started = 0.0
        self.validation_time = 0.0
        self._validation_started: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.steps, self.validation_time = [], 0.0
        self.fit_started = time.perf_counter()
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_start(trainer, pl_module)
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._validation_started is not None:
            self.validation_time += time.perf_counter() - self._validation_started
            self._validation_started = None

    def on_step(self, trainer: pl.Trainer, step: StepTime) -> None:
        self.steps.append(step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        text = self.render(trainer, time.perf_counter() - self.fit_started)
        path = self.output_dir / "profile_report.md"
        write_text_atomic(path, text)
        if self.html:
            body = markdown.markdown(text, extensions=["tables", "fenced_code"])
            write_text_atomic(path.with_suffix(".html"), HTML.replace("{body}", body))
        log.info("profile report: %s", path)

    def summary(self, fit_seconds: float) -> dict[str, Any]:
        """The report's figures (also what the tests check)."""
        steps = self.steps
        wait = sum(s.wait for s in steps)
        compute = sum(s.compute for s in steps)
        images = sum(s.images for s in steps)
        loop = wait + compute
        return {
            "steps": len(steps),
            "epochs": len({s.epoch for s in steps}),
            "images": images,
            "fit_seconds": fit_seconds,
            "train_loop_seconds": loop,
            "validation_seconds": self.validation_time,
            "data_wait_fraction": wait / loop if loop else 0.0,
            "images_per_second": images / loop if loop else 0.0,
            **peak_memory(),
        }

    def render(self, trainer: pl.Trainer, fit_seconds: float) -> str:
        s = self.summary(fit_seconds)
        lines = [
            "# Profile report",
            "",
            f"Run: `{self.output_dir}` · device: {trainer.strategy.root_device} · "
            f"processes: {trainer.world_size} · precision: {trainer.precision}",
            "",
            "| | |",
            "|---|---|",
            f"| training steps | {s['steps']} ({s['epochs']} epoch{'s' * (s['epochs'] != 1)}) |",
            f"| images | {s['images']} |",
            f"| fit wall time | {s['fit_seconds']:.2f} s |",
            f"| training loop (wait + compute) | {s['train_loop_seconds']:.2f} s |",
            f"| validation | {s['validation_seconds']:.2f} s |",
            f"| throughput | {s['images_per_second']:.1f} images/s (training loop) |",
            f"| data-loading share | {s['data_wait_fraction']:.1%} of the training loop |",
        ]
        lines += [f"| {name.replace('_', ' ')} | {value:.0f} MiB |"
                  for name, value in s.items() if name.endswith("_mib")]
        lines += ["", *self._step_section(), "", *self._profiler_section(trainer), "",
                  *self._rules_section()]
        return "\n".join(lines) + "\n"

    def _step_section(self) -> list[str]:
        if not self.steps:
            return ["## Step time", "", "No training steps ran."]
        times = [s.compute for s in self.steps]
        waits = [s.wait for s in self.steps]
        median, limit, outliers = step_outliers(self.steps, self.outlier_k)
        ms = 1000.0
        lines = [
            "## Step time",
            "",
            "Compute: forward, backward and optimizer step. Wait: from the previous step's end "
            "to this batch's start (loading, collating, copying to the device).",
            "",
            "| | min | p50 | p90 | p99 | max | mean |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, values in (("compute (ms)", times), ("wait (ms)", waits)):
            # numpy's default (linear) percentiles: the one definition in the project.
            row = [*np.percentile(values, [0, 50, 90, 99, 100]), statistics.fmean(values)]
            lines.append(f"| {label} | " + " | ".join(f"{v * ms:.1f}" for v in row) + " |")
        lines += [
            "",
            f"Outliers (compute > median + {self.outlier_k:g}·MAD = {limit * ms:.1f} ms): "
            f"{len(outliers)} of {len(self.steps)} steps.",
        ]
        if outliers:
            lines += ["", "| step | epoch | compute (ms) | wait (ms) | × median |",
                      "|---|---|---|---|---|"]
            for s in sorted(outliers, key=lambda s: -s.compute)[: self.max_outliers]:
                lines.append(f"| {s.step} | {s.epoch} | {s.compute * ms:.1f} | "
                             f"{s.wait * ms:.1f} | {s.compute / median:.1f} |")
        return lines

    def _profiler_section(self, trainer: pl.Trainer) -> list[str]:
        profiler = trainer.profiler
        lines = ["## Profiler", ""]
        if isinstance(profiler, PassThroughProfiler):
            return [*lines, "None selected (`profiler=simple|advanced|pytorch` adds one)."]
        where = Path(profiler.dirpath) if profiler.dirpath else None
        lines.append(f"`{type(profiler).__name__}`, output in `{where}` "
                     "(written when the trainer tears down, after this report).")
        if isinstance(profiler, PyTorchProfiler):
            lines.append("Traces: `*.pt.trace.json` there: open them at https://ui.perfetto.dev "
                         "or in `chrome://tracing`.")
        return lines

    def _rules_section(self) -> list[str]:
        entries = read_rules_file(self.rules_file) if self.rules_file else []
        lines = ["## Rules", ""]
        if self.rules_file is None:
            return [*lines, "No rules file configured."]
        if not entries:
            return [*lines, f"No rule fired (`{self.rules_file}`)."]
        lines += [f"{len(entries)} fired (`{self.rules_file}`):", "",
                  "| rule | step | epoch | what it saw |", "|---|---|---|---|"]
        for e in entries:
            message = str(e.get("message", "")).replace("|", "\\|")
            lines.append(f"| {e.get('rule')} | {e.get('step')} | {e.get('epoch')} | {message} |")
        return lines


HTML = (
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Profile report</title>\n"
    "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;"
    "text-align:right}td:first-child{text-align:left}</style></head>\n"
    "<body>\n{body}\n</body></html>\n"
)
