"""Download throughput against a local S3 (moto's server), one thread vs the default, in one run.

`python scripts/benchmark_download.py [--bins 400] [--latency-ms 30]`

The bucket holds the real ABID sample (../shared/abid/sample), copied under new ids until
``--bins`` bins exist. Each setting downloads into a fresh directory; "resume" re-runs the default
over a complete directory (every file checked with a conditional GET, nothing transferred). The
``latency`` rows go through a proxy that adds ``--latency-ms`` per request, like a round trip to
S3: on localhost moto's CPU is the limit, over a network it is the round trip.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests.support

from bincount.data.abid import read_metadata  # noqa: E402
from bincount.data.download import BinFetcher, Layout, download_bins, s3_client  # noqa: E402
from tests.support.local_s3 import FaultProxy, LocalS3, put_bins  # noqa: E402
from tests.support.paths import CONF, SAMPLE  # noqa: E402

BUCKET = "abid-bench"


def run(endpoint: str, labels: dict[str, int], workers: int, data_dir: Path) -> dict[str, float]:
    prepare = OmegaConf.load(CONF / "prepare_data.yaml").prepare
    client = s3_client(region="us-east-1", endpoint_url=endpoint, unsigned=True,
                       retry_mode=prepare.retry_mode, max_attempts=prepare.max_attempts,
                       max_pool_connections=workers)
    fetcher = BinFetcher(client, Layout(BUCKET, "bin-images/", "metadata/", data_dir),
                         prepare.max_image_pixels)
    start = time.perf_counter()
    results = download_bins(labels, fetcher, workers, progress=False)
    seconds = time.perf_counter() - start
    status = Counter(r.status for r in results)
    if status["failed"] or status["rejected"]:
        raise SystemExit(f"benchmark run had failures: {status}")
    return {"seconds": seconds, "bins": len(results), "mb": sum(r.bytes for r in results) / 1e6,
            "skipped": status["skipped"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=400, help="bins in the bucket")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="added per request")
    args = parser.parse_args()
    if not (SAMPLE / "images").is_dir():
        raise SystemExit(f"the real ABID sample is absent ({SAMPLE})")
    default_workers = int(OmegaConf.load(CONF / "prepare_data.yaml").prepare.workers)
    sources = sorted(p.stem for p in (SAMPLE / "metadata").glob("*.json"))
    labels = {}
    with LocalS3() as s3:
        client = s3.public_bucket(BUCKET)
        for n in range(args.bins):
            source = sources[n % len(sources)]
            image_id = f"{n:06d}"
            put_bins(client, BUCKET, SAMPLE, [source], rename={source: image_id})
            labels[image_id] = read_metadata(SAMPLE / "metadata" / f"{source}.json")\
                .expected_quantity
        rows = []
        with FaultProxy(s3.url, latency_s=args.latency_ms / 1000) as proxy:
            for name, endpoint in (("localhost", s3.url),
                                   (f"+{args.latency_ms:g} ms latency", proxy.url)):
                for workers in (1, default_workers):
                    with tempfile.TemporaryDirectory() as tmp:
                        rows.append((name, workers, "fresh",
                                     run(endpoint, labels, workers, Path(tmp))))
                        if workers == default_workers:
                            rows.append((name, workers, "resume",
                                         run(endpoint, labels, workers, Path(tmp))))
    print(f"\nDownload benchmark: {args.bins} real ABID bins (photo + metadata, "
          f"{rows[0][3]['mb']:.1f} MB) from moto's S3 server on 127.0.0.1\n")
    print(f"{'endpoint':<22}{'threads':>8}  {'run':<7}{'bins/s':>9}{'MB/s':>8}{'seconds':>9}")
    for name, workers, kind, r in rows:
        mb_s = f"{r['mb'] / r['seconds']:.2f}" if kind == "fresh" else "-"
        print(f"{name:<22}{workers:>8}  {kind:<7}{r['bins'] / r['seconds']:>9.1f}"
              f"{mb_s:>8}{r['seconds']:>9.2f}")
    print(f"\n(default threads = prepare.workers = {default_workers}; 'resume' re-checks a "
          "complete directory: one conditional GET per file, answered 304)")


if __name__ == "__main__":
    main()
