"""Epochs trained and best validation loss of a 16-trial Optuna sweep without and with the
median pruner (same seed, synthetic bins): `python scripts/benchmark_pruning.py`.

The same sweep (same seed, same search space, same data) runs once per pruner setting, each as
its own ``scripts/tune.py -m`` process; the studies then say how many epochs each trained and
how good its best trial was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from bincount.cli import hydra_main, run
from bincount.errors import BincountError
from bincount.files import write_json_atomic

TUNE_SCRIPT = Path(__file__).resolve().parent / "tune.py"


@dataclass(frozen=True)
class SweepFigures:
    pruner: str
    trials: int
    completed: int
    pruned: int
    failed: int
    epochs: int  # epochs trained over all trials (validation losses reported)
    best_val_loss: float | None
    best_trial: int | None
    seconds: float


def figures(study: optuna.Study, pruner: str, seconds: float) -> SweepFigures:
    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(completed, key=lambda t: t.value) if completed else None
    return SweepFigures(
        pruner=pruner, trials=len(trials), completed=len(completed),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        epochs=sum(len(t.intermediate_values) for t in trials),
        best_val_loss=best.value if best else None, best_trial=best.number if best else None,
        seconds=round(seconds, 1),
    )


def run_sweep(cfg: DictConfig, pruner: str | None, out: Path) -> SweepFigures:
    label = pruner or "none"
    study_name = f"pruning-{label}"
    command = [
        sys.executable, str(TUNE_SCRIPT), "-m",
        f"paths.root_dir={cfg.paths.root_dir}", f"paths.cache_dir={cfg.paths.cache_dir}",
        f"paths.log_dir={out}", f"seed={cfg.seed}", f"tuner.study_name={study_name}",
        f"tuner.n_trials={int(cfg.benchmark.n_trials)}", f"tuner.pruner={pruner or 'null'}",
        *cfg.benchmark.overrides,
    ]
    threads = str(int(cfg.benchmark.threads))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    log_path = out / f"sweep_{label}.log"
    print(f"sweep with pruner={label}: {cfg.benchmark.n_trials} trials (log: {log_path})",
          flush=True)
    started = time.perf_counter()
    with log_path.open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BincountError(f"the sweep with pruner={label} failed (exit {done.returncode}): "
                            f"see {log_path}")
    storage = f"sqlite:///{out}/tune/{study_name}/optuna.db"
    return figures(optuna.load_study(study_name=study_name, storage=storage), label, seconds)


def benchmark(cfg: DictConfig) -> list[SweepFigures]:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    rows = [run_sweep(cfg, pruner, out) for pruner in cfg.benchmark.pruners]
    table = Table(title=f"{cfg.benchmark.n_trials}-trial sweeps, seed {cfg.seed}")
    for column in ("pruner", "complete", "pruned", "failed", "epochs trained",
                   "best val_loss", "best trial", "wall time"):
        table.add_column(column, justify="left" if column == "pruner" else "right")
    for r in rows:
        table.add_row(r.pruner, str(r.completed), str(r.pruned), str(r.failed), str(r.epochs),
                      "-" if r.best_val_loss is None else f"{r.best_val_loss:.4f}",
                      "-" if r.best_trial is None else str(r.best_trial), f"{r.seconds:.0f} s")
    console = Console(width=100)
    console.print(table)
    base = rows[0]
    for r in rows[1:]:
        if base.epochs and base.best_val_loss and r.best_val_loss is not None:
            change = r.best_val_loss / base.best_val_loss - 1
            console.print(f"pruner={r.pruner}: {r.epochs / base.epochs:.0%} of the epochs of "
                          f"pruner={base.pruner}, best val_loss {change:+.1%}")
    console.print(f"load average (1 min) before/after: {load_before:.1f} / "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    write_json_atomic(out / "benchmark.json", {
        "n_trials": int(cfg.benchmark.n_trials), "seed": int(cfg.seed),
        "sweeps": [asdict(r) for r in rows],
    })
    console.print(f"results: {out / 'benchmark.json'}", soft_wrap=True)
    return rows


@hydra_main("benchmark_pruning")
def main(cfg: DictConfig) -> None:
    run(benchmark, cfg)


if __name__ == "__main__":
    main()
