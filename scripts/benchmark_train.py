"""Training throughput and data-wait share, every input pipeline side by side in one run.

`python scripts/benchmark_train.py [--arch resnet18] [--image-size 224] [--batch-size 32]
[--steps 20] [--warmup 3] [--precision 32] [--device auto] [--workers auto] [--compile]`

Renders synthetic bins (``--photo-size`` px JPEGs, like a camera's photo larger than the
training size) into a temporary directory, then trains the same model on them for the same
steps with each input pipeline: loader JPEG (decode + resize every epoch) or cache (uint8 at
the training size, memory-mapped), augmentation per image on the CPU (torchvision, in the
loader) or batched on the device (after the transfer). Each pipeline is also timed alone
(ready training batches, no model): the loader's own ceiling. The last row runs the cache +
device pipeline in a plain PyTorch loop (forward, loss, backward, step, metrics: what
training_step does) to show Lightning's own overhead: twice, between that row's Lightning run
and a second one (ABBA order), compared by median step time. The model, data module and
settings are built from conf/ as training builds them. Warm-up steps (and torch.compile's
compilation) are excluded.

"wait" is the time from the end of one step to the start of the next: fetching the batch, the
copy to the device and, for the batched path, its augmentation (as profile_report.md counts it).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bincount.config import build
from bincount.cpus import usable_cpus

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = [("jpeg", "cpu"), ("jpeg", "device"), ("cache", "cpu"), ("cache", "device")]


def machine() -> str:
    """CPU model and usable cores, the GPU if one is used, and the load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {usable_cpus()} cores usable"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    if hasattr(os, "getloadavg"):
        text += "; load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return text


def make_cfg(args: argparse.Namespace, tmp: Path, loader: str, augment: str) -> DictConfig:
    overrides = [
        "data=synthetic",
        f"paths.root_dir={tmp}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.output_dir={tmp / 'run'}",
        f"data.synthetic.per_class={args.per_class}",
        f"data.synthetic.image_size={args.photo_size}",
        f"data.synthetic.save_size={args.photo_size}",
        f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        f"data.cache={'true' if loader == 'cache' else 'false'}",
        f"data.augment={augment}",
        f"model.arch={args.arch}",
        "model.pretrained=false",
        f"model.compile={'true' if args.compile else 'false'}",
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


class Clock(pl.Callback):
    """Per training step: wait (end of the previous step to this start) and compute."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps: list[tuple[float, float, int]] = []
        self.mark: float | None = None
        self.started = 0.0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.sync()
        self.mark = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.sync()
        now = time.perf_counter()
        wait = self.started - self.mark if self.mark is not None else 0.0
        self.steps.append((wait, now - self.started, len(batch["label"])))
        self.mark = now


def lightning_run(cfg: DictConfig, args: argparse.Namespace, device: torch.device) -> list:
    pl.seed_everything(0, workers=True)
    datamodule = build(cfg.data)
    model = build(cfg.model)
    clock = Clock(device)
    trainer = pl.Trainer(
        accelerator=device.type if device.type != "cuda" else "gpu", devices=1,
        precision=args.precision, max_steps=args.warmup + args.steps, limit_val_batches=0,
        num_sanity_val_steps=0, enable_checkpointing=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
    )
    trainer.fit(model, datamodule=datamodule)
    del trainer, model, datamodule
    gc.collect()  # the run's loader workers and tensors go before the next measurement
    return clock.steps[args.warmup:]


def plain_run(cfg: DictConfig, args: argparse.Namespace, device: torch.device) -> list:
    """The same steps without Lightning: loader, transfer, batched augmentation, train step."""
    pl.seed_everything(0, workers=True)
    datamodule = build(cfg.data)
    model = build(cfg.model).to(device)
    datamodule.prepare_data()
    datamodule.setup("fit")
    optimizer = model.configure_optimizers()["optimizer"]
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(args.precision))
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16 and device.type == "cuda")
    metrics = model.metrics["train_metrics"]
    model.train()
    steps: list[tuple[float, float, int]] = []
    epoch = 0
    loader = datamodule.train_dataloader()  # one loader for the run, as Lightning keeps it
    while len(steps) < args.warmup + args.steps:
        loader.sampler.set_epoch(epoch)
        clock = time.perf_counter()
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
            batch = plain_augment(datamodule, batch)
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(batch["image"])
                loss = F.cross_entropy(logits, batch["label"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            metrics.update(logits.detach(), batch["label"])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            steps.append((started - clock, now - started, len(batch["label"])))
            clock = now
            if len(steps) == args.warmup + args.steps:
                break
        epoch += 1
    del loader, model, datamodule, optimizer
    gc.collect()  # the run's loader workers and tensors go before the next measurement
    return steps[args.warmup:]


def pipeline_rate(cfg: DictConfig, args: argparse.Namespace, device: torch.device) -> float:
    """Images/s of the input pipeline alone: ready training batches (loaded, on the device,
    augmented and normalized), no model."""
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    seen, start, batches, epoch = 0, 0.0, 0, 0
    loader = datamodule.train_dataloader()  # one loader for the run, as Lightning keeps it
    total = args.warmup + args.pipeline_batches
    while batches < total:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if batches == args.warmup:
                start, seen = time.perf_counter(), 0
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
            batch = plain_augment(datamodule, batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seen += len(batch["label"])
            batches += 1
            if batches == total:
                break
        epoch += 1
    rate = seen / (time.perf_counter() - start)
    del loader, datamodule
    gc.collect()
    return rate


def plain_augment(datamodule: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """What Lightning's on_after_batch_transfer hook does, called by hand (in training mode)."""
    datamodule.trainer = _Training()
    return datamodule.on_after_batch_transfer(batch, 0)


class _Training:
    """What the data module reads of a trainer: training mode, one process, epoch 0 (the
    benchmark's loops set the sampler's epoch themselves)."""

    training = True
    world_size = 1
    global_rank = 0
    current_epoch = 0


def summarize(steps: list[tuple[float, float, int]]) -> dict[str, float]:
    wait = sum(s[0] for s in steps)
    compute = sum(s[1] for s in steps)
    images = sum(s[2] for s in steps)
    total = wait + compute
    return {"images_per_s": images / total, "wait_share": wait / total,
            "step_ms": 1000 * total / len(steps),
            "median_ms": 1000 * statistics.median(s[0] + s[1] for s in steps)}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--photo-size", type=int, default=320,
                        help="side of the rendered JPEGs (the JPEG rows resize them every epoch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--pipeline-batches", type=int, default=50,
                        help="timed batches of each pipeline alone (a short window is noisy)")
    parser.add_argument("--per-class", type=int, default=100,
                        help="bins rendered per count (80%% train: 400 by default)")
    parser.add_argument("--precision", default="32", help="32 | bf16-mixed | 16-mixed")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--workers", default="auto", help="loader workers (data.num_workers)")
    parser.add_argument("--compile", action="store_true", help="model.compile=true")
    parser.add_argument("--rows", nargs="+", default=["all"],
                        help="which rows: jpeg-cpu jpeg-device cache-cpu cache-device plain")
    args = parser.parse_args(argv)
    name = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    wanted = set(args.rows)
    print(f"Machine: {machine()}")
    print(f"Settings: {args.arch}, {args.image_size} px from {args.photo_size} px JPEGs, batch "
          f"{args.batch_size}, precision {args.precision}, device {device}, workers "
          f"{args.workers}, compile {args.compile}; {args.steps} timed steps after "
          f"{args.warmup} warm-up steps, {args.pipeline_batches} batches of each pipeline "
          f"alone", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bincount-bench-") as tmp:
        lightning: list = []  # the cache + device row's steps
        for loader, augment in PIPELINES:
            if wanted & {"all", f"{loader}-{augment}"}:
                cfg = make_cfg(args, Path(tmp), loader, augment)
                steps = lightning_run(cfg, args, device)
                rows.append({"loader": loader, "augment": augment, "loop": "Lightning",
                             **summarize(steps), "pipeline": pipeline_rate(cfg, args, device)})
                lightning = steps if (loader, augment) == ("cache", "device") else lightning
        if wanted & {"all", "plain"}:
            # Lightning, plain, plain, Lightning (ABBA): a load that drifts during the run
            # weighs on both loops alike, so the overhead compares medians over both pairs.
            cfg = make_cfg(args, Path(tmp), "cache", "device")
            plain = plain_run(cfg, args, device) + plain_run(cfg, args, device)
            rows.append({"loader": "cache", "augment": "device", "loop": "plain PyTorch",
                         **summarize(plain), "pipeline": None})
            if lightning:
                lightning = lightning + lightning_run(cfg, args, device)
                rows[-1]["overhead"] = (summarize(lightning)["median_ms"]
                                        / summarize(plain)["median_ms"] - 1)
    print_table(rows)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    base = next((r for r in rows if (r["loader"], r["augment"]) == ("jpeg", "cpu")), None)
    print()
    print("| loader | augmentation | loop | training images/s | vs JPEG + per-image | data wait "
          "| ms/step | input pipeline alone, images/s | vs JPEG + per-image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
        aug = "per image, CPU" if r["augment"] == "cpu" else "batched, device"
        alone, alone_ratio = "-", "-"
        if r["pipeline"] is not None:
            alone = f"{r['pipeline']:.0f}"
            alone_ratio = f"{r['pipeline'] / base['pipeline']:.2f}x" if base else "-"
        print(f"| {r['loader']} | {aug} | {r['loop']} | {r['images_per_s']:.1f} | {ratio} | "
              f"{100 * r['wait_share']:.1f}% | {r['step_ms']:.0f} | {alone} | {alone_ratio} |")
    lit = next((r for r in rows if r["loop"] == "Lightning" and r["loader"] == "cache"
                and r["augment"] == "device"), None)
    plain = next((r for r in rows if "overhead" in r), None)
    print()
    if base and lit:
        # The goals, from the rows above (one run, so one machine state).
        print(f"cache + batched device vs JPEG + per-image (this run): input pipeline alone "
              f"{lit['pipeline'] / base['pipeline']:.2f}x, training "
              f"{lit['images_per_s'] / base['images_per_s']:.2f}x (goal >= 5x)")
    cached = [r for r in rows if r["loader"] == "cache" and r["loop"] == "Lightning"]
    if cached:
        print("data wait, cache rows: " + ", ".join(
            f"{100 * r['wait_share']:.1f}% ({'per image' if r['augment'] == 'cpu' else 'batched'})"
            for r in cached) + " (goal < 5%)")
    if plain:
        print(f"Lightning overhead (cache + device, median time per step vs the plain loop, "
              f"runs in ABBA order): {100 * plain['overhead']:+.1f}% (goal <= 3%)")
    print(f"Machine at the end: {machine()}")


if __name__ == "__main__":
    main()
