"""Loader throughput, JPEG decoding vs the preprocessed cache, on the real ABID sample, one run.

`python scripts/benchmark_cache.py [--image-size 224] [--epochs 1] [--workers 0 2]`

Both loaders read the same photos (the sample's bins with 1-5 items) through a DataLoader with
the training transforms; the cache is built once first (its build time and size are reported).
The first epoch of each loader is a warm-up (page cache), the figures are the later epochs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from bincount.data.abid import read_metadata, write_file_list
from bincount.data.cache import CachedBinDataset, ensure_cache
from bincount.data.dataset import BinImageDataset, collate_bins
from bincount.data.splits import ensure_manifest, load_manifest, split_ids
from bincount.data.transforms import eval_transform, train_transform

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "abid" / "sample"
COUNTS = tuple(OmegaConf.load(ROOT / "conf" / "data" / "abid.yaml").counts)  # data.counts


def images_per_second(dataset: Dataset, workers: int, epochs: int) -> float:
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers,
                        collate_fn=collate_bins)
    for _ in loader:  # warm-up epoch
        pass
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        for batch in loader:
            seen += len(batch["id"])
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    if not (SAMPLE / "images").is_dir():
        raise SystemExit(f"the real ABID sample is absent ({SAMPLE})")
    size = args.image_size
    # One intra-op thread, as in DataLoader workers: on a small shared machine two threads per
    # transform make the in-process (workers=0) rows measure thread contention, not decoding.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "abid"
        (data / "images").mkdir(parents=True)
        labels = {}
        for path in sorted((SAMPLE / "metadata").glob("*.json")):
            count = read_metadata(path).expected_quantity
            if count in COUNTS:
                labels[path.stem] = count
                shutil.copy(SAMPLE / "images" / f"{path.stem}.jpg", data / "images")
        write_file_list(data / "file_list.json", labels)
        ensure_manifest(data, [1.0, 0.0, 0.0], seed=0)
        items = split_ids(load_manifest(data / "splits.json"), "train")

        start = time.perf_counter()
        location = ensure_cache(data, Path(tmp) / "cache", size, workers=2, progress=False)
        build = time.perf_counter() - start
        jpeg_mb = sum(p.stat().st_size for p in (data / "images").glob("*.jpg")) / 1e6
        cache_mb = (location / "train.u8").stat().st_size / 1e6

        rows = []
        for name, make in (("eval", eval_transform), ("train", train_transform)):
            transform = make(size)
            jpeg = BinImageDataset(items, data / "images", transform, COUNTS)
            cached = CachedBinDataset(location, "train", transform, COUNTS)
            for workers in args.workers:
                rows.append((name, workers, images_per_second(jpeg, workers, args.epochs),
                             images_per_second(cached, workers, args.epochs)))

    print(f"\nLoader benchmark: {len(items)} real ABID photos, {size} px, batch 32, "
          f"{args.epochs} timed epochs\n")
    print(f"cache build: {build:.1f} s ({len(items) / build:.0f} images/s); "
          f"JPEGs {jpeg_mb:.1f} MB -> cache {cache_mb:.1f} MB "
          f"(x{cache_mb / jpeg_mb:.1f})\n")
    print(f"{'transforms':<12}{'workers':>8}{'JPEG img/s':>12}{'cache img/s':>13}{'speed-up':>10}")
    for name, workers, jpeg_rate, cache_rate in rows:
        print(f"{name:<12}{workers:>8}{jpeg_rate:>12.0f}{cache_rate:>13.0f}"
              f"{cache_rate / jpeg_rate:>9.1f}x")


if __name__ == "__main__":
    main()
