"""``scripts/predict.py``: counts for photos from a model directory or an endpoint.

A local model directory runs the inference handlers in this process; an endpoint (SageMaker,
or the local server by URL) is called through :class:`ImagePredictor`. Photos come from files,
folders, tables (with an ``expected`` column: reconciliation verdicts) or S3 prefixes
(:mod:`bincount.serving.predict_files`). A photo the model cannot read gets its error in its
row and makes the exit status non-zero; the others still run.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bincount.errors import BincountError, expect_bool
from bincount.files import write_json_atomic
from bincount.serving import handlers
from bincount.serving.package import check_model_dir
from bincount.serving.predict_files import Photo, PredictionsFile, chunks, collect_photos
from bincount.serving.runtimes import choose_runtime, usable_cpus
from bincount.serving.settings import PredictSettings, optional_text, tta_choice

PREDICTIONS_FILE = "predictions.json"

Row = dict[str, Any]


@dataclass(frozen=True)
class OutputSettings:
    """``predict.output`` (None: a table and predictions.json), ``predict.progress``, ``tta``."""

    output: Path | None
    progress: bool
    tta: str

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> OutputSettings:
        output = optional_text(cfg.predict.get("output"))
        return cls(output=None if output is None else Path(output),
                   progress=expect_bool("predict.progress", cfg.predict.progress),
                   tta=tta_choice("tta", cfg.get("tta")))


class LocalModel:
    """The handlers in this process on the chosen runtime: a batch of photos per forward pass."""

    def __init__(self, model_dir: Path, runtime: str, tta: str) -> None:
        self.model = handlers.load_served_model(model_dir, runtime, usable_cpus(), tta)

    def __call__(self, photos: Sequence[Photo]) -> list[Row]:
        rows: list[Row] = [{"image": photo.image} for photo in photos]
        decoded: list[tuple[Row, handlers.Request]] = []
        for row, photo in zip(rows, photos, strict=True):
            try:
                request = handlers.input_fn(photo.read(), photo.content_type)
                request = handlers.Request(request.image, photo.expected)
                handlers.check_expected(request, self.model)
                decoded.append((row, request))
            except handlers.BaseInferenceToolkitError as err:
                row["error"] = err.message
            except OSError as err:
                row["error"] = f"cannot be read ({err.strerror or err})"
        if decoded:
            results = handlers.predict_fn([request for _, request in decoded], self.model)
            for (row, _), result in zip(decoded, results, strict=True):
                row.update(result)
        return rows


class RemoteModel:
    """An endpoint (SageMaker, or the local server by URL): one photo per request, the expected
    count as ``CustomAttributes: expected=N`` (as the SageMaker runtime sends it)."""

    def __init__(self, settings: PredictSettings) -> None:
        from bincount.aws import make_session
        from bincount.serving.predictor import ImagePredictor

        if settings.url is not None:
            self.predictor = ImagePredictor.for_url(settings.url)
        else:
            self.predictor = ImagePredictor(str(settings.endpoint),
                                            make_session(region=settings.region))
        self.source = settings.source

    def __call__(self, photos: Sequence[Photo]) -> list[Row]:
        from botocore.exceptions import BotoCoreError, ClientError

        rows: list[Row] = []
        for photo in photos:
            args = {"ContentType": photo.content_type}
            if photo.expected is not None:
                args["CustomAttributes"] = f"expected={photo.expected}"
            try:
                rows.append({"image": photo.image,
                             **self.predictor.predict(photo.read(), initial_args=args)})
            except OSError as err:
                rows.append({"image": photo.image,
                             "error": f"cannot be read ({err.strerror or err})"})
            except BotoCoreError as err:  # no credentials, nothing listening at the URL, ...
                raise BincountError(f"could not call {self.source}: {err}") from err
            except ClientError as err:
                error = err.response.get("Error", {})
                if error.get("Code") != "ModelError":  # the endpoint itself is wrong: stop here
                    raise BincountError(f"the endpoint refused the request: {err}") from err
                rows.append({"image": photo.image, "error": error.get("Message", str(err))})
        return rows


def with_confidence(row: Row) -> Row:
    """The probability of the predicted count, as its own column."""
    if "error" not in row and "probabilities" in row:
        row["confidence"] = row["probabilities"][str(row["count"])]
    return row


def render(rows: Sequence[Row], source: str, console: Console | None = None) -> None:
    """A table with image paths relative to the folder they share (named in the caption)."""
    paths = [Path(row["image"]) for row in rows]
    base = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path()
    table = Table(title=f"bin counts ({source})", caption=f"images under {base}")
    table.add_column("image", overflow="fold")
    table.add_column("count", justify="right")
    table.add_column("confidence", justify="right")
    table.add_column("probabilities")
    for row, path in zip(rows, paths, strict=True):
        name = str(path.relative_to(base))
        if "error" in row:
            table.add_row(name, "-", "-", f"[red]error: {row['error']}[/red]")
            continue
        probabilities = row["probabilities"]
        table.add_row(
            name,
            str(row["count"]),
            f"{probabilities[str(row['count'])]:.3f}",
            " ".join(f"{p:.2f}" for p in probabilities.values()),
        )
    (console or Console()).print(table)


def predict(cfg: DictConfig) -> list[Row]:
    """Predict every photo. With ``predict.output`` (.csv/.jsonl) rows stream to that file
    (resumable); without it, a table is printed and ``predictions.json`` written to the run's
    output dir. Returns this run's rows; unreadable photos make it raise at the end."""
    settings = PredictSettings.from_cfg(cfg)
    out = OutputSettings.from_cfg(cfg)
    photos = collect_photos(settings.images)
    source = settings.source
    if settings.model_dir is not None:
        check_model_dir(settings.model_dir)
        runtime = choose_runtime(settings.model_dir, settings.runtime, key="predict.runtime")
        # The handlers read their limits from the environment, as on an endpoint.
        os.environ.update(settings.limits.to_env())
        model: Callable[[Sequence[Photo]], list[Row]] = LocalModel(
            settings.model_dir, runtime, out.tta)
        source = f"{source}, runtime {runtime}"
    else:
        model = RemoteModel(settings)
    batch = settings.batch_size if settings.model_dir is not None else 1
    if out.output is None:
        rows = [with_confidence(row) for chunk in chunks(photos, batch) for row in model(chunk)]
        render(rows, source)
        path = Path(cfg.paths.output_dir) / PREDICTIONS_FILE
        write_json_atomic(path, rows)
    else:
        rows = stream(model, photos, out.output, batch, out.progress)
        path = out.output
    print(f"predictions: {path}", flush=True)
    failed = [row for row in rows if "error" in row]
    for row in failed[:5]:
        print(f"  could not read {row['image']}: {row['error']}", file=sys.stderr)
    if failed:
        raise BincountError(f"{len(failed)} of {len(rows)} images could not be read "
                            f"(their rows in {path} say why)")
    return rows


def stream(model: Callable[[Sequence[Photo]], list[Row]], photos: Sequence[Photo], output: Path,
           batch: int, progress: bool) -> list[Row]:
    """Append one row per photo not yet in ``output``, a batch at a time, with a progress bar."""
    rows: list[Row] = []
    with PredictionsFile(output) as file:
        todo = [photo for photo in photos if photo.image not in file.done]
        if len(todo) < len(photos):
            print(f"{output}: {len(photos) - len(todo)} of {len(photos)} photos already "
                  "predicted; continuing with the rest", flush=True)
        columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("predict", total=len(todo))
            for chunk in chunks(todo, batch):
                done = [with_confidence(row) for row in model(chunk)]
                file.write(done)
                rows.extend(done)
                bar.advance(task, len(chunk))
    counts = Counter(row.get("count") for row in rows if "error" not in row)
    by_count = ", ".join(f"{c}: {n}" for c, n in sorted(counts.items()))
    print(f"{len(rows)} photos predicted (by count: {by_count or 'none'})", flush=True)
    return rows
