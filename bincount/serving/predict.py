"""``scripts/predict.py``: counts for image files from a model directory or an endpoint.

A local model directory runs the inference handlers in this process; an endpoint (SageMaker,
or the local server by URL) is called through :class:`ImagePredictor`. A file the model cannot
read gets its error in the table and makes the exit status non-zero; the others still run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from bincount.errors import BincountError
from bincount.files import write_json_atomic
from bincount.serving import handlers
from bincount.serving.package import check_model_dir
from bincount.serving.runtimes import choose_runtime, usable_cpus
from bincount.serving.settings import PredictSettings

IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
PREDICTIONS_FILE = "predictions.json"


def collect_images(images: Sequence[str]) -> list[Path]:
    """Files as given, directories expanded to their JPEG/PNG files (sorted)."""
    found: list[Path] = []
    for entry in images:
        path = Path(entry)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise BincountError(f"images: directory {path} holds no .jpg/.jpeg/.png files")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise BincountError(f"images: {path} does not exist (expected an image or a folder)")
    return found


def content_type_of(path: Path) -> str:
    return IMAGE_SUFFIXES.get(path.suffix.lower(), "application/x-image")


Row = dict[str, Any]


def _chunks(paths: Sequence[Path], size: int) -> Iterable[Sequence[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def predict_local(
    model_dir: Path, paths: Sequence[Path], batch_size: int, runtime: str
) -> list[Row]:
    """Run the handlers here on ``runtime``, ``batch_size`` images per forward pass; rows in
    input order."""
    model = handlers.load_served_model(model_dir, runtime, usable_cpus())
    rows: list[Row] = []
    for chunk in _chunks(paths, batch_size):
        chunk_rows: list[Row] = [{"image": str(path)} for path in chunk]
        decoded: list[tuple[Row, Any]] = []
        for row, path in zip(chunk_rows, chunk, strict=True):
            try:
                decoded.append((row, handlers.input_fn(path.read_bytes(), content_type_of(path))))
            except handlers.BaseInferenceToolkitError as err:
                row["error"] = err.message
        if decoded:
            results = handlers.predict_fn([image for _, image in decoded], model)
            for (row, _), result in zip(decoded, results, strict=True):
                row.update(result)
        rows.extend(chunk_rows)
    return rows


def predict_remote(
    call: Callable[[bytes, str], Row], paths: Sequence[Path], source: str
) -> list[Row]:
    from botocore.exceptions import BotoCoreError, ClientError

    rows: list[Row] = []
    for path in paths:
        try:
            rows.append({"image": str(path), **call(path.read_bytes(), content_type_of(path))})
        except BotoCoreError as err:  # no credentials, nothing listening at the URL, ...
            raise BincountError(f"could not call {source}: {err}") from err
        except ClientError as err:
            error = err.response.get("Error", {})
            if error.get("Code") != "ModelError":  # the endpoint itself is wrong: stop here
                raise BincountError(f"the endpoint refused the request: {err}") from err
            rows.append({"image": str(path), "error": error.get("Message", str(err))})
    return rows


def render(rows: Sequence[Row], source: str, console: Console | None = None) -> None:
    """A table with image paths relative to the folder they share (named in the caption)."""
    paths = [Path(row["image"]) for row in rows]
    base = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path()
    table = Table(title=f"bin counts ({source})", caption=f"images under {base}")
    table.add_column("image", overflow="fold")
    table.add_column("count", justify="right")
    table.add_column("confidence", justify="right")
    table.add_column("probabilities (1..5)")
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
    """Predict every image; print a table; write ``predictions.json`` to the run's output dir."""
    settings = PredictSettings.from_cfg(cfg)
    paths = collect_images(settings.images)
    source = settings.source
    if settings.model_dir is not None:
        check_model_dir(settings.model_dir)
        runtime = choose_runtime(settings.model_dir, settings.runtime, key="predict.runtime")
        # The handlers read their limits from the environment, as on an endpoint.
        os.environ.update(settings.limits.to_env())
        rows = predict_local(settings.model_dir, paths, settings.batch_size, runtime)
        source = f"{source}, runtime {runtime}"
    else:
        from bincount.aws import make_session
        from bincount.serving.predictor import ImagePredictor

        if settings.url is not None:
            predictor = ImagePredictor.for_url(settings.url)
        else:
            predictor = ImagePredictor(str(settings.endpoint),
                                       make_session(region=settings.region))

        def call(data: bytes, content_type: str) -> Row:
            return predictor.predict(data, initial_args={"ContentType": content_type})

        rows = predict_remote(call, paths, settings.source)
    render(rows, source)
    out = Path(cfg.paths.output_dir) / PREDICTIONS_FILE
    write_json_atomic(out, rows)
    print(f"predictions: {out}", flush=True)
    failed = sum("error" in row for row in rows)
    if failed:
        raise BincountError(f"{failed} of {len(rows)} images could not be read (see the table)")
    return rows
