"""The end of a sweep: the best trial, a table of all trials, ``optimization_results.yaml`` and a
ready-to-run command that retrains with the best parameters."""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bincount.files import write_yaml_atomic
from bincount.overrides import override_key, top_key

RESULTS = "optimization_results.yaml"
# Overrides that configure the search itself, not the training it tunes.
SEARCH_KEYS = ("tuner", "search_space", "objective", "hydra")


def training_overrides(overrides: Iterable[str]) -> list[str]:
    """The command line's overrides that configure training (not the search's own)."""
    return [o for o in overrides if top_key(o) not in SEARCH_KEYS]


def retrain_command(task_overrides: Iterable[str], best_params: Mapping[str, Any]) -> str:
    """``python scripts/train.py <the sweep's training overrides> <best params>``."""
    kept = [o for o in training_overrides(task_overrides) if override_key(o) not in best_params]
    params = [f"{key}={_value(value)}" for key, value in best_params.items()]
    return shlex.join(["python", "scripts/train.py", *kept, *params])


def _value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def trials_table(rows: Sequence[Mapping[str, Any]], param_keys: Sequence[str],
                 title: str) -> Table:
    table = Table(title=title)
    for column in ("trial", "state", "value", *param_keys, "epochs", "note"):
        table.add_column(column, justify="left" if column in ("state", "note") else "right")
    for row in rows:
        value = row.get("value")
        table.add_row(
            str(row["number"]), row["state"],
            "" if value is None else f"{value:.5g}",
            *(_cell(row["params"].get(key)) for key in param_keys),
            "" if row.get("epochs") is None else str(row["epochs"]),
            row.get("note") or "",
        )
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def report(results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
           param_keys: Sequence[str], path: Path, console: Console | None = None) -> None:
    """Print the summary and write ``results`` (with every trial's row) to ``path``."""
    write_yaml_atomic(path, {**results, "trials": [dict(r) for r in rows]})
    console = console or Console(width=120)
    if rows:
        console.print(trials_table(rows, param_keys, title=f"{results['name']} trials"))
    best = results.get("best_params")
    if best is None:
        console.print("no trial completed: there is no best trial")
    else:
        value = results["best_value"]
        shown = f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else value
        which = (f"training job {results['best_training_job']}" if "best_training_job" in results
                 else f"trial {results.get('best_trial')}")
        console.print(f"best {which}: {results['metric']}={shown}")
        for key, val in best.items():
            console.print(f"  {key}={_value(val)}")
        if results.get("retrain"):
            console.print(f"retrain with the best parameters:\n  {results['retrain']}",
                          soft_wrap=True)
    for what in ("tensorboard", "dashboard"):
        if results.get(what):
            console.print(f"{what}: {results[what]}", soft_wrap=True)
    console.print(f"results: {path}", soft_wrap=True)
