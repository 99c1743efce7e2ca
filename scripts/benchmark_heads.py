"""The softmax head against the ordinal one (CORN), each with and without test-time augmentation,
on the synthetic set and on real ABID photos, in one run: `python scripts/benchmark_heads.py`.

Every model is trained by ``train(cfg)`` (the one recipe; ``conf/benchmark_heads.yaml`` says on
what and how long), then its exported model scores the validation and test splits once, each
image and its mirror. Per head and TTA setting (``none``; ``hflip``: the mean of the calibrated
probabilities of image and mirror) the test split gives accuracy, RMSE and within-one accuracy of
the predicted count, the expected calibration error before and after temperature scaling (the
temperature fitted on validation), and the share of reconciliation pairs (every test image once
with its true count, once with a wrong one) settled automatically by thresholds fitted on
validation for the target precisions (``reconcile.*``, 0.95), with the error rate among them.
The fitting and the metrics are the package's (:mod:`bincount.calibrate`,
:mod:`bincount.models.calibration`, :mod:`bincount.models.reconcile`, torchmetrics).

The real photos are ../shared/abid/sample (Amazon Bin Image Dataset, CC BY-NC-SA 3.0 US),
counts 1-5: few, so each seed draws its own stratified split and trains anew; the table gives
mean +- standard deviation over the seeds.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from benchmark_train import machine as host  # scripts/ is on sys.path when a script runs
from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from bincount.calibrate import (
    ReconcileSettings,
    Scores,
    calibration_metrics,
    fit_calibration,
    score_split,
)
from bincount.cli import hydra_main, run
from bincount.config import build, check_targets
from bincount.data.abid import read_metadata, write_file_list
from bincount.errors import BincountError, expect_int
from bincount.files import write_json_atomic
from bincount.models.export import load_model
from bincount.models.heads import check_head
from bincount.models.metrics import CountMetrics
from bincount.train import train

TTA = ("none", "hflip")
METRICS = ("acc", "rmse", "within1", "ece_before", "ece_after", "settled", "settled_error")


def machine() -> str:
    """benchmark_train's machine line (CPU model, usable cores, GPU, load) with the torch
    version and its threads."""
    return f"{host()}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def training_cfg(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, composed as scripts/train.py would."""
    cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    check_targets(cfg)
    return cfg


def real_data_dir(sample_dir: Path, counts: list[int], dest: Path) -> Path:
    """An ABID-layout copy of the sample's photos whose count is in ``counts``."""
    if (dest / "file_list.json").is_file():
        return dest
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "metadata").mkdir()
    labels: dict[str, int] = {}
    for path in sorted((sample_dir / "metadata").glob("*.json")):
        meta = read_metadata(path)
        if meta.expected_quantity in counts:
            labels[meta.image_id] = meta.expected_quantity
            shutil.copy(sample_dir / "images" / f"{meta.image_id}.jpg", tmp / "images")
            shutil.copy(path, tmp / "metadata")
    if not labels:
        raise BincountError(f"benchmark.real.sample_dir: no photo of {sample_dir} holds one of "
                            f"the counts {counts}")
    write_file_list(tmp / "file_list.json", labels)
    tmp.replace(dest)
    return dest


def measure(val: Scores, test: Scores, counts: list[int], settings: ReconcileSettings,
            tta: str) -> dict[str, Any]:
    """Test-split figures of one model under one TTA setting; temperature and thresholds are
    fitted on validation (the thresholds on the probabilities this setting gives)."""
    if tta == "none":
        val, test = replace(val, mirrored=None), replace(test, mirrored=None)
    calibration = fit_calibration(val, counts, settings)
    cal = calibration_metrics({"val": val, "test": test}, calibration, counts)
    metrics = CountMetrics(counts, "test")
    metrics.update(test.probs(calibration.temperature), test.labels)
    values = {k: float(v) for k, v in metrics.compute().items()}
    return {
        "acc": values["test_acc"], "rmse": values["test_rmse"],
        "within1": values["test_within1_acc"], "ece_before": cal["test_ece"],
        "ece_after": cal["test_ece_calibrated"], "settled": cal["reconcile_settled"],
        "settled_error": cal["reconcile_settled_error"], "temperature": calibration.temperature,
        "test_images": len(test.labels),
    }


def run_one(overrides: list[str], out: Path, settings: ReconcileSettings,
            label: dict[str, Any]) -> list[dict[str, Any]]:
    """Train one model, score its val and test splits (image and mirror), measure each TTA."""
    cfg = training_cfg([*overrides, f"paths.output_dir={out}"])
    print(f"training {label} -> {out}", flush=True)
    started = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - started
    net, spec = load_model(Path(cfg.paths.model_dir))
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    device = torch.device("cpu")
    val = score_split(net, datamodule, "val", device, mirrored=True)
    test = score_split(net, datamodule, "test", device, mirrored=True)
    return [{**label, "tta": tta, "train_seconds": round(seconds, 1),
             **measure(val, test, list(spec.counts), settings, tta)} for tta in TTA]


def seeds_of(key: str, value: Any) -> list[int]:
    return [expect_int(f"{key}[{i}]", s, 0) for i, s in enumerate(value or [])]


def summarize_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (set, head, tta): the mean and standard deviation of each figure over the seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["set"], r["head"], r["tta"]), []).append(r)
    rows = []
    for (data, head, tta), members in groups.items():
        row: dict[str, Any] = {"set": data, "head": head, "tta": tta, "seeds": len(members),
                               "test_images": members[0]["test_images"]}
        for key in METRICS:
            values = [m[key] for m in members if m[key] is not None]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return rows


def cell(row: dict[str, Any], key: str, percent: bool = False) -> str:
    value, std = row[key], row[f"{key}_std"]
    if value is None:
        return "-"
    scale, digits = (100, 1) if percent else (1, 3)
    text = f"{value * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def render(rows: list[dict[str, Any]], precision: str, console: Console) -> None:
    table = Table(title=f"Heads on the test split (mean ± sd over seeds; verdict thresholds "
                        f"fitted on val for precision {precision})")
    columns = ("set", "head", "TTA", "seeds", "test imgs", "accuracy %", "RMSE",
               "within one %", "ECE before", "ECE after", "settled %", "settled error %")
    for c in columns:
        table.add_column(c, justify="left" if c in ("set", "head", "TTA") else "right")
    for r in rows:
        table.add_row(r["set"], r["head"], r["tta"], str(r["seeds"]), str(r["test_images"]),
                      cell(r, "acc", True), cell(r, "rmse"), cell(r, "within1", True),
                      cell(r, "ece_before"), cell(r, "ece_after"), cell(r, "settled", True),
                      cell(r, "settled_error", True))
    console.print(table)


def compare(rows: list[dict[str, Any]], console: Console) -> None:
    """One line per set and TTA setting: ordinal against softmax."""
    by_key = {(r["set"], r["head"], r["tta"]): r for r in rows}
    for (data, head, tta), o in by_key.items():
        s = by_key.get((data, "softmax", tta))
        if head != "ordinal" or s is None:
            continue
        console.print(f"{data}, tta={tta}: ordinal vs softmax: accuracy "
                      f"{(o['acc'] - s['acc']) * 100:+.1f} points, RMSE {o['rmse']:.3f} vs "
                      f"{s['rmse']:.3f}, settled {(o['settled'] - s['settled']) * 100:+.1f} "
                      "points")


def benchmark(cfg: DictConfig) -> list[dict[str, Any]]:
    b = cfg.benchmark
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    heads = [check_head(f"benchmark.heads[{i}]", h) for i, h in enumerate(b.heads)]
    settings = ReconcileSettings.from_cfg(cfg)
    if b.threads is not None:
        torch.set_num_threads(expect_int("benchmark.threads", b.threads, 1))
    console = Console(width=160)
    base = [*b.overrides, f"paths.root_dir={cfg.paths.root_dir}",
            f"paths.cache_dir={cfg.paths.cache_dir}"]
    plans: list[tuple[list[str], Path, dict[str, Any]]] = []
    syn = b.synthetic
    for seed in seeds_of("benchmark.synthetic.seeds", syn.seeds):
        for head in heads:
            plans.append(([*base, "experiment=demo", f"model.head={head}", f"seed={seed}",
                           f"data.synthetic.per_class={syn.per_class}",
                           f"data.image_size={syn.image_size}", f"trainer.max_epochs={syn.epochs}"],
                          out / "synthetic" / f"seed{seed}" / head,
                          {"set": "synthetic", "head": head, "seed": seed}))
    real, skipped = b.real, None
    real_seeds = seeds_of("benchmark.real.seeds", real.seeds)
    sample = Path(real.sample_dir)
    if real_seeds and not (sample / "metadata").is_dir():
        skipped = f"the real set is skipped: no ABID sample at {sample} (benchmark.real.sample_dir)"
        console.print(skipped)
        real_seeds = []
    counts = [int(c) for c in real.counts]
    for seed in real_seeds:
        data_dir = real_data_dir(sample, counts, out / "real" / f"data_seed{seed}")
        for head in heads:
            plans.append(([*base, "data=abid", f"paths.data_dir={data_dir}",
                           f"data.counts=[{','.join(map(str, counts))}]", f"data.seed={seed}",
                           f"data.splits=[{','.join(str(s) for s in real.splits)}]",
                           f"data.image_size={real.image_size}",
                           f"data.batch_size={real.batch_size}", "data.cache=true",
                           "data.num_workers=0", f"model.head={head}", f"seed={seed}",
                           f"trainer.max_epochs={real.epochs}"],
                          out / "real" / f"seed{seed}" / head,
                          {"set": "ABID sample", "head": head, "seed": seed}))
    if not plans:
        raise BincountError("benchmark: nothing to run (benchmark.synthetic.seeds and "
                            "benchmark.real.seeds are empty, or the sample is absent)")
    started = time.perf_counter()
    load_before = machine()
    runs: list[dict[str, Any]] = []
    for n, (overrides, run_dir, label) in enumerate(plans, 1):
        runs += run_one(overrides, run_dir, settings, label)
        seconds = time.perf_counter() - started
        # Written after every training: a long run that is stopped keeps what it measured.
        write_json_atomic(out / "benchmark_heads.json", {
            "machine": load_before, "seconds": round(seconds, 1), "skipped": skipped,
            "trainings": f"{n} of {len(plans)}",
            "benchmark": OmegaConf.to_container(b, resolve=True),
            "reconcile": {"match_precision": settings.match_precision,
                          "mismatch_precision": settings.mismatch_precision},
            "rows": summarize_rows(runs), "runs": runs,
        })
    rows = summarize_rows(runs)
    precision = f"{settings.match_precision:g}/{settings.mismatch_precision:g}"
    render(rows, precision, console)
    compare(rows, console)
    console.print(f"machine: {load_before} (at the start)", soft_wrap=True)
    console.print(f"{len(plans)} trainings in {seconds / 60:.1f} min", soft_wrap=True)
    console.print(f"results: {out / 'benchmark_heads.json'}", soft_wrap=True)
    return rows


@hydra_main("benchmark_heads")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    main()
