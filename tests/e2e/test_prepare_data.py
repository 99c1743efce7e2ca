"""scripts/prepare_data.py in its own process, killed or interrupted mid-download against moto's
S3 server (real ABID photos): nothing partial under a final name, and the next run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bincount.data.abid import read_file_list, read_metadata, write_file_list
from tests.support.local_s3 import FaultProxy, LocalS3, put_bins
from tests.support.paths import ROOT, SCRIPTS

BUCKET = "abid-e2e"
PER_COUNT = 6


@pytest.fixture(scope="module")
def bucket(sample_dir: Path) -> Iterator[SimpleNamespace]:
    by_count: dict[int, list[str]] = {}
    for path in sorted((sample_dir / "metadata").glob("*.json")):
        by_count.setdefault(read_metadata(path).expected_quantity, []).append(path.stem)
    good = {i: c for c in range(1, 6) for i in by_count[c][:PER_COUNT]}
    with LocalS3() as s3:
        put_bins(s3.public_bucket(BUCKET), BUCKET, sample_dir, list(good))
        yield SimpleNamespace(url=s3.url, good=good, sample=sample_dir)


def write_list(path: Path, labels: dict[str, int]) -> Path:
    write_file_list(path, labels)
    return path


def _run(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / "prepare_data.py"), *args],
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_an_interrupted_run_leaves_no_partial_file_and_the_next_completes(
    bucket: SimpleNamespace, tmp_path: Path, sig: signal.Signals, ctrl_c_reaches_children: None,
) -> None:
    labels = bucket.good
    file_list = write_list(tmp_path / "list.json", labels)
    data = tmp_path / "abid"
    args = [f"paths.root_dir={tmp_path}", f"paths.data_dir={data}",
            f"prepare.file_list={file_list}", f"prepare.bucket={BUCKET}", "prepare.workers=2"]
    with FaultProxy(bucket.url, latency_s=0.1) as slow:
        proc = _run([*args, f"prepare.endpoint_url={slow.url}"])
        deadline = time.monotonic() + 60
        while len(list((data / "images").glob("*.jpg"))) < 4:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again to resume" in err
        assert not list(data.glob("*/.*.part"))  # in-flight bins were finished, not cut
    else:
        assert proc.returncode == -signal.SIGKILL
    # Whatever sits under a final name is whole.
    done = list((data / "images").glob("*.jpg"))
    assert 4 <= len(done) < len(labels)
    for path in done:
        assert path.read_bytes() == (bucket.sample / "images" / path.name).read_bytes()
    for path in (data / "metadata").glob("*.json"):
        assert path.read_bytes() == (bucket.sample / "metadata" / path.name).read_bytes()
    assert not (data / "splits.json").exists()

    proc = _run([*args, f"prepare.endpoint_url={bucket.url}"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(list((data / "images").glob("*.jpg"))) == len(labels)
    assert not list(data.glob("*/.*.part"))
    assert read_file_list(data / "file_list.json") == labels
    total = next(line for line in out.splitlines() if " all " in line).split()
    assert int(total[3]) >= len(done)  # skipped: the ones the killed run finished
