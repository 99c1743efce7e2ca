"""``scripts/prepare_data.py``: download the ABID subset, check it, split it, cache, upload.

The data directory ends up with ``images/``, ``metadata/``, ``file_list.json`` (the selected ids,
less those rejected or missing from the bucket), ``splits.json`` and, when something went wrong,
``failed.json``, ``label_issues.json`` and ``rejected/<file>`` with a ``.reason.txt`` beside it.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bincount.data.abid import (
    FILE_LIST,
    DataError,
    read_file_list,
    write_file_list,
)
from bincount.data.download import (
    BinFetcher,
    BinResult,
    Layout,
    download_bins,
    remove_parts,
    s3_client,
)
from bincount.data.settings import PrepareSettings
from bincount.data.splits import SPLITS, ensure_manifest, load_manifest
from bincount.errors import BincountError
from bincount.files import write_json_atomic

FAILED = "failed.json"
LABEL_ISSUES = "label_issues.json"
STATUSES = ("downloaded", "skipped", "failed", "rejected")


def source_labels(file_list: str | Path | None) -> dict[str, int]:
    """``{id: count}`` of the given file list, or of the one packaged with bincount."""
    if file_list:
        return read_file_list(Path(file_list))
    with as_file(files("bincount.data").joinpath(FILE_LIST)) as packaged:
        return read_file_list(packaged)


def select(labels: Mapping[str, int], per_class_limit: int | None) -> dict[str, int]:
    """The first ``per_class_limit`` ids of each count, in file-list order (all when None)."""
    if per_class_limit is None:
        return dict(labels)
    taken: Counter[int] = Counter()
    chosen = {}
    for image_id, count in labels.items():
        if taken[count] < per_class_limit:
            chosen[image_id] = count
            taken[count] += 1
    return chosen


def write_split(
    data_dir: Path, labels: Mapping[str, int], ratios: Sequence[float], seed: int, overwrite: bool
) -> Path:
    """Write ``file_list.json`` and the manifest; an existing, different split is refused.

    The new list is staged first, so a refusal leaves the old list and manifest untouched.
    """
    staging = data_dir / ".staging"
    staged = staging / FILE_LIST
    write_file_list(staged, dict(labels))
    try:
        manifest = ensure_manifest(data_dir, list(ratios), int(seed), staged, overwrite)
        staged.replace(data_dir / FILE_LIST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def summary_table(
    results: Sequence[BinResult], manifest: dict[str, Any] | None, title: str
) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True,
                  show_edge=False, pad_edge=False,
                  caption="mismatch: metadata disagrees with the file list (see label_issues.json)")
    for name in ("count", "listed", *STATUSES, "mismatch", *SPLITS):
        table.add_column(name, justify="right")
    counts = sorted({r.count for r in results})
    splits = Counter((e["count"], e["split"]) for e in (manifest or {}).get("images", []))
    for count in [*counts, None]:
        rows = [r for r in results if count is None or r.count == count]
        status = Counter(r.status for r in rows)
        cells = [str(len(rows)), *(str(status[s]) for s in STATUSES),
                 str(sum(r.label_issue is not None for r in rows))]
        sizes = [sum(n for (c, s), n in splits.items() if s == split and count in (None, c))
                 for split in SPLITS]
        cells += [str(n) if manifest else "-" for n in sizes]
        table.add_row("all" if count is None else str(count), *cells)
    return table


def _write_reports(data_dir: Path, results: Sequence[BinResult]) -> None:
    failed = [
        {"id": r.image_id, "count": r.count, "missing": r.missing, "reason": r.reason}
        for r in results if r.status == "failed"
    ]
    issues = [
        {"id": r.image_id, "count": r.count, "issue": r.label_issue}
        for r in results if r.label_issue
    ]
    for name, rows in ((FAILED, failed), (LABEL_ISSUES, issues)):
        if rows:
            write_json_atomic(data_dir / name, rows)
        else:
            (data_dir / name).unlink(missing_ok=True)


def prepare_data(cfg: Any) -> int:
    """Run the whole preparation from the ``prepare`` and ``paths`` config; the exit code."""
    try:
        return _prepare(PrepareSettings.from_cfg(cfg))
    except BincountError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; run the same command again to resume",
              file=sys.stderr, flush=True)
        return 130


def _prepare(p: PrepareSettings) -> int:
    if p.source != "abid":
        return _prepare_own(p)
    data_dir = p.data_dir
    labels = select(source_labels(p.file_list), p.per_class_limit)
    if not labels:
        raise DataError("the file list selects no images")
    layout = Layout(p.bucket, p.image_prefix, p.metadata_prefix, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    remove_parts(*layout.dirs)  # temporary files of a killed run
    client = s3_client(
        region=p.region, endpoint_url=p.endpoint_url, unsigned=True,
        retry_mode=p.retry_mode, max_attempts=p.max_attempts, max_pool_connections=p.workers,
    )
    fetcher = BinFetcher(client, layout, p.max_image_pixels)
    print(f"Fetching {len(labels)} bins from s3://{p.bucket} into {data_dir} "
          f"({p.workers} threads)", flush=True)
    results = download_bins(labels, fetcher, p.workers, p.progress)
    results.sort(key=lambda r: (r.count, r.image_id))
    _write_reports(data_dir, results)

    failed = [r for r in results if r.status == "failed"]
    retryable = [r for r in failed if not r.missing]
    manifest = None
    keep = {r.image_id: r.count for r in results if r.status in ("downloaded", "skipped")}
    if keep and not retryable:
        manifest = load_manifest(
            write_split(data_dir, keep, p.splits, p.seed, p.overwrite_splits)
        )
    console = Console()
    if not console.is_terminal:  # logs: wide enough that no column header is cut
        console.width = max(console.width, 120)
    console.print(summary_table(results, manifest, f"ABID subset in {data_dir}"))
    _print_notes(data_dir, results, manifest is not None)
    if manifest is None:
        return 1
    _upload_and_cache(p, data_dir)
    return 1 if failed else 0


def _upload_and_cache(p: PrepareSettings, data_dir: Path) -> None:
    if p.upload_to:
        from bincount.data.upload import upload_prepared

        upload_client = s3_client(
            region=p.region, endpoint_url=p.upload_endpoint_url, unsigned=False,
            retry_mode=p.retry_mode, max_attempts=p.max_attempts,
            max_pool_connections=p.upload_workers,
        )
        bucket, prefix = p.upload_to
        report = upload_prepared(data_dir, bucket, prefix, upload_client, p.upload_workers,
                                 p.progress)
        print(f"Uploaded {report.uploaded} files ({report.bytes / 1e6:.1f} MB), "
              f"{report.skipped} already there.")
        print(f"SageMaker training channel: {report.uri}", flush=True)
        if p.source != "abid":  # the channel is paths.data_dir in the job: no data.root/table
            print(f"Train there: python scripts/train.py launcher=sagemaker data={p.source} "
                  f"launcher.inputs.train={report.uri}", flush=True)
    if p.cache:
        from bincount.data.cache import ensure_cache

        location = ensure_cache(data_dir, p.cache_dir, p.image_size, p.cache_workers, p.progress)
        print(f"Preprocessed cache ({p.image_size} px square): {location}", flush=True)


def _prepare_own(p: PrepareSettings) -> int:
    """A folder or table set: check every photo, write the manifest, upload and cache it."""
    from bincount.data.sources import labelled_set

    labelled = labelled_set(source=p.source, root=p.root, table=p.table,
                            data_dir=p.own_data_dir, cache_dir=p.cache_dir)
    path = labelled.write_manifest(p.splits, p.seed, p.overwrite_splits)
    manifest = load_manifest(path)
    table = Table(title=f"{p.source} set in {labelled.data_dir}", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    for name in ("count", "photos", *SPLITS):
        table.add_column(name, justify="right")
    splits = Counter((e["count"], e["split"]) for e in manifest["images"])
    for count in [*labelled.counts, None]:
        cells = [sum(n for (c, _), n in splits.items() if count in (None, c)),
                 *(sum(n for (c, s), n in splits.items() if s == split and count in (None, c))
                   for split in SPLITS)]
        table.add_row("all" if count is None else str(count), *map(str, cells))
    Console().print(table)
    if labelled.skipped:
        print(f"{len(labelled.skipped)} unreadable photos left out (listed under 'skipped' "
              f"in {path}):")
        for where, reason in labelled.skipped[:5]:
            print(f"  {where}: {reason}")
    print(f"Split manifest: {path}", flush=True)
    _upload_and_cache(p, labelled.data_dir)
    return 0


def _print_notes(data_dir: Path, results: Sequence[BinResult], split_written: bool) -> None:
    failed = [r for r in results if r.status == "failed"]
    rejected = [r for r in results if r.status == "rejected"]
    issues = [r for r in results if r.label_issue]
    for title, rows, where in (
        ("failed", failed, data_dir / FAILED),
        ("rejected", rejected, data_dir / "rejected"),
    ):
        if rows:
            print(f"{len(rows)} bins {title} (see {where}):")
            for r in rows[:5]:
                print(f"  {r.image_id}: {r.reason}")
    if issues:
        print(f"{len(issues)} bins whose metadata disagrees (see {data_dir / LABEL_ISSUES}):")
        for r in issues[:5]:
            print(f"  {r.image_id}: {r.label_issue}")
    if split_written:
        print(f"Split manifest: {data_dir / 'splits.json'}  file list: {data_dir / FILE_LIST}")
    else:
        print("Split manifest not written: no bin is complete yet, or some downloads failed "
              "and may succeed on a re-run. Run the same command again to resume.")
    if failed:
        print(f"{len(failed)} bins failed; the list is in {data_dir / FAILED}", file=sys.stderr)
    sys.stdout.flush()


def load_failed(data_dir: Path) -> list[dict[str, Any]]:
    """The failures the last run recorded (empty when it had none)."""
    path = Path(data_dir) / FAILED
    return json.loads(path.read_text()) if path.is_file() else []
