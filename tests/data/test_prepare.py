"""prepare_data (download, check, split, cache, upload) in-process, against moto's S3 server on
127.0.0.1 holding real ABID photos.

The bucket gets a public-read policy (as aft-vbi-pds has) and is read through the real boto3
client with an unsigned config; faults come from a real HTTP proxy in front of moto.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import DictConfig
from PIL import Image

from bincount.data.abid import read_file_list, read_metadata, write_file_list
from bincount.data.cache import CachedBinDataset, ensure_cache
from bincount.data.prepare import FAILED, LABEL_ISSUES, prepare_data, select
from bincount.data.splits import load_manifest, split_ids
from tests.support.local_s3 import Fault, FaultProxy, LocalS3, put_bins

BUCKET = "abid-test"
PER_COUNT = 6  # real bins per count in the bucket


@pytest.fixture(scope="module")
def bucket(sample_dir: Path) -> Iterator[SimpleNamespace]:
    """moto's server with real bins (counts 1-5) and synthetic faulty ones."""
    by_count: dict[int, list[str]] = {}
    for path in sorted((sample_dir / "metadata").glob("*.json")):
        by_count.setdefault(read_metadata(path).expected_quantity, []).append(path.stem)
    good = {i: c for c in range(1, 6) for i in by_count[c][:PER_COUNT]}
    spare = {c: by_count[c][PER_COUNT:] for c in range(1, 6)}
    photo = (sample_dir / "images" / f"{spare[3][0]}.jpg").read_bytes()
    meta3 = (sample_dir / "metadata" / f"{spare[3][0]}.json").read_bytes()
    png = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(png, format="PNG")
    odd_items = {"EXPECTED_QUANTITY": 2, "BIN_FCSKU_DATA": {
        "A1": {"asin": "A1", "quantity": 1}, "B2": {"asin": "B2", "quantity": 2}}}
    synthetic = {  # id: (listed count, photo bytes, metadata bytes)
        "90001": (3, photo[: len(photo) // 2], meta3),  # truncated JPEG
        "90002": (3, png.getvalue(), meta3),  # a PNG named .jpg
        "90003": (3, b"<html>Not Found</html>", meta3),  # not an image at all
        "90005": (2, photo, meta3),  # EXPECTED_QUANTITY 3, listed under 2
        "90006": (3, photo, meta3),  # fails twice, then succeeds (see the proxy)
        "90007": (2, photo, json.dumps(odd_items).encode()),  # items add up to 3
        "90008": (3, photo, b"{not json"),
    }
    deep = b'{"EXPECTED_QUANTITY": 3, "BIN_FCSKU_DATA": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    long_number = b"9" * 400
    hostile = {  # one bad object each, none of which may stop the run
        "90101": (3, photo, deep),  # RecursionError in json.loads
        "90102": (3, photo, b'{"EXPECTED_QUANTITY": ' + long_number + b"}"),  # OverflowError
        "90103": (3, photo, b'{"EXPECTED_QUANTITY": 3, "BIN_FCSKU_DATA": {"A1": {"quantity": '
                  + long_number + b"}}}"),  # an absurd item quantity: unknown, the bin is fine
        "9" * 300: (3, photo, meta3),  # File name too long
    }
    with LocalS3() as s3:
        client = s3.public_bucket(BUCKET)
        put_bins(client, BUCKET, sample_dir, list(good))
        # Ids are strings: 1000 and 01000 are different bins with different counts.
        put_bins(client, BUCKET, sample_dir, [spare[2][0], spare[4][0]],
                 rename={spare[2][0]: "1000", spare[4][0]: "01000"})
        for image_id, (_, image, meta) in {**synthetic, **hostile}.items():
            client.put_object(Bucket=BUCKET, Key=f"bin-images/{image_id}.jpg", Body=image)
            client.put_object(Bucket=BUCKET, Key=f"metadata/{image_id}.json", Body=meta)
        yield SimpleNamespace(
            url=s3.url, client=client, good=good, sample=sample_dir,
            twins={"1000": (spare[2][0], 2), "01000": (spare[4][0], 4)},
            synthetic={i: c for i, (c, _, _) in synthetic.items()},
            hostile={i: c for i, (c, _, _) in hostile.items()},
        )


def write_list(path: Path, labels: dict[str, int]) -> Path:
    write_file_list(path, labels)
    return path


def prepare_cfg(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, endpoint: str, labels: dict[str, int],
    *overrides: str,
) -> DictConfig:
    file_list = write_list(tmp_path / "source_list.json", labels)
    return make_cfg(
        f"paths.data_dir={tmp_path / 'abid'}",
        f"prepare.file_list={file_list}",
        f"prepare.bucket={BUCKET}",
        f"prepare.endpoint_url={endpoint}",
        "prepare.progress=false",
        "prepare.workers=4",
        *overrides,
        name="prepare_data",
        tiny=False,
    )


def test_downloads_real_bins_splits_them_and_a_rerun_skips_them(
    bucket: SimpleNamespace, make_cfg: Callable[..., DictConfig], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Anonymous: credentials in the environment are neither needed nor sent.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    labels = {**bucket.good, **{i: c for i, (_, c) in bucket.twins.items()}}
    with FaultProxy(bucket.url) as proxy:
        cfg = prepare_cfg(make_cfg, tmp_path, proxy.url, labels)
        assert prepare_data(cfg) == 0
        assert proxy.signed == 0
    out = capsys.readouterr().out
    data = tmp_path / "abid"
    for image_id in bucket.good:
        assert (data / "images" / f"{image_id}.jpg").read_bytes() == (
            bucket.sample / "images" / f"{image_id}.jpg").read_bytes()
        assert (data / "metadata" / f"{image_id}.json").is_file()
    for image_id, (source, _) in bucket.twins.items():
        assert (data / "images" / f"{image_id}.jpg").read_bytes() == (
            bucket.sample / "images" / f"{source}.jpg").read_bytes()
    assert read_file_list(data / "file_list.json") == labels
    manifest = load_manifest(data / "splits.json")
    assert {e["id"]: e["count"] for e in manifest["images"]} == labels
    assert {e["id"] for e in manifest["images"]} >= {"1000", "01000"}
    assert manifest["seed"] == 42 and manifest["ratios"] == [0.8, 0.1, 0.1]
    assert "downloaded" in out and "train" in out and not (data / FAILED).exists()

    # A re-run transfers nothing, and leaves the manifest byte for byte as it was.
    before = (data / "splits.json").read_bytes()
    with FaultProxy(bucket.url) as proxy:
        cfg = prepare_cfg(make_cfg, tmp_path, proxy.url, labels)
        assert prepare_data(cfg) == 0
    assert (data / "splits.json").read_bytes() == before
    table = capsys.readouterr().out
    total = next(line for line in table.splitlines() if " all " in line)
    assert total.split()[1:6] == [str(len(labels)), "0", str(len(labels)), "0", "0"]

    # Verified by checksum, not existence: a same-size corrupted copy is fetched again.
    victim = data / "images" / f"{next(iter(bucket.good))}.jpg"
    good_bytes = victim.read_bytes()
    victim.write_bytes(bytes(len(good_bytes)))
    assert prepare_data(prepare_cfg(make_cfg, tmp_path, bucket.url, labels)) == 0
    assert victim.read_bytes() == good_bytes


def test_faults_are_recorded_and_the_run_goes_on(
    bucket: SimpleNamespace, make_cfg: Callable[..., DictConfig], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = {**dict(list(bucket.good.items())[:5]), **bucket.synthetic, "90004": 5}
    faults = {
        f"/{BUCKET}/bin-images/90006.jpg": Fault(times=2, status=503),  # throttled twice
        f"/{BUCKET}/metadata/90006.json": Fault(times=1, status=None),  # connection dropped
    }
    with FaultProxy(bucket.url, faults) as proxy:
        cfg = prepare_cfg(make_cfg, tmp_path, proxy.url, labels)
        assert prepare_data(cfg) == 1  # something failed: non-zero exit
        assert proxy.hits[f"/{BUCKET}/bin-images/90006.jpg"] == 3
    captured = capsys.readouterr()
    data = tmp_path / "abid"

    failed = json.loads((data / FAILED).read_text())
    assert [(f["id"], f["missing"]) for f in failed] == [("90004", True)]
    assert "metadata/90004.json does not exist (404)" in failed[0]["reason"]
    assert "failed.json" in captured.err

    reasons = {p.name: p.read_text() for p in (data / "rejected").glob("*.reason.txt")}
    assert "truncated" in reasons["90001.jpg.reason.txt"]
    assert "not a JPEG (Pillow reads it as PNG)" in reasons["90002.jpg.reason.txt"]
    assert "not an image" in reasons["90003.jpg.reason.txt"]
    assert "not valid JSON" in reasons["90008.json.reason.txt"]
    for image_id in ("90001", "90002", "90003"):
        assert not (data / "images" / f"{image_id}.jpg").exists()
        assert (data / "rejected" / f"{image_id}.jpg").is_file()
    assert (data / "images" / "90006.jpg").is_file()  # retried by botocore, then whole

    issues = {i["id"]: i["issue"] for i in json.loads((data / LABEL_ISSUES).read_text())}
    assert issues["90005"] == "EXPECTED_QUANTITY is 3, the file list says 2"
    assert issues["90007"] == "items' quantities add up to 3"

    # Missing and rejected bins are left out of the split; the rest is split all the same.
    kept = read_file_list(data / "file_list.json")
    assert set(kept) == set(labels) - {"90001", "90002", "90003", "90004", "90008"}
    assert {e["id"] for e in load_manifest(data / "splits.json")["images"]} == set(kept)

    # A re-run remembers the rejections (304 against the rejected copy) and fails the same way.
    assert prepare_data(prepare_cfg(make_cfg, tmp_path, bucket.url, labels)) == 1
    assert read_file_list(data / "file_list.json") == kept
    assert "90001" in capsys.readouterr().out


def test_retries_exhausted_fail_the_run_and_withhold_the_split(
    bucket: SimpleNamespace, make_cfg: Callable[..., DictConfig], tmp_path: Path,
) -> None:
    labels = dict(list(bucket.good.items())[:4])
    broken = next(iter(labels))
    faults = {f"/{BUCKET}/bin-images/{broken}.jpg": Fault(times=100, status=500)}
    with FaultProxy(bucket.url, faults) as proxy:
        cfg = prepare_cfg(make_cfg, tmp_path, proxy.url, labels, "prepare.max_attempts=2")
        assert prepare_data(cfg) == 1
        assert proxy.hits[f"/{BUCKET}/bin-images/{broken}.jpg"] == 2  # max_attempts
    data = tmp_path / "abid"
    failed = json.loads((data / FAILED).read_text())
    assert [f["id"] for f in failed] == [broken] and not failed[0]["missing"]
    assert not (data / "splits.json").exists()  # a re-run may still complete the set
    assert not list((data / "images").glob(".*.part"))
    assert prepare_data(prepare_cfg(make_cfg, tmp_path, bucket.url, labels)) == 0
    assert not (data / FAILED).exists() and (data / "splits.json").is_file()


def test_a_changed_split_is_refused_and_a_private_bucket_named(
    bucket: SimpleNamespace, make_cfg: Callable[..., DictConfig], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = dict(list(bucket.good.items())[:3])
    # A split made with other inputs is never replaced silently.
    assert prepare_data(prepare_cfg(make_cfg, tmp_path, bucket.url, labels)) == 0
    manifest = (tmp_path / "abid" / "splits.json").read_bytes()
    assert prepare_data(prepare_cfg(make_cfg, tmp_path, bucket.url, labels, "prepare.seed=7")) == 2
    assert "overwrite_splits=true" in capsys.readouterr().err
    assert (tmp_path / "abid" / "splits.json").read_bytes() == manifest
    cfg = prepare_cfg(make_cfg, tmp_path, bucket.url, labels, "prepare.seed=7",
                      "prepare.overwrite_splits=true")
    assert prepare_data(cfg) == 0
    assert load_manifest(tmp_path / "abid" / "splits.json")["seed"] == 7

    # A bucket that does not allow anonymous reads: every bin fails, with the reason.
    bucket.client.create_bucket(Bucket="private-bucket")
    put_bins(bucket.client, "private-bucket", bucket.sample, list(labels))
    capsys.readouterr()
    cfg = prepare_cfg(make_cfg, tmp_path, bucket.url, labels, "prepare.bucket=private-bucket",
                      f"paths.data_dir={tmp_path / 'private'}")
    assert prepare_data(cfg) == 1
    assert "access denied (403)" in capsys.readouterr().out


def test_endpoint_from_aws_endpoint_url_and_a_per_class_limit(
    bucket: SimpleNamespace, make_cfg: Callable[..., DictConfig], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket.url)  # prepare.endpoint_url stays null
    cfg = prepare_cfg(make_cfg, tmp_path, "null", bucket.good, "prepare.per_class_limit=2")
    assert cfg.prepare.endpoint_url is None
    assert prepare_data(cfg) == 0
    kept = read_file_list(tmp_path / "abid" / "file_list.json")
    assert kept == select(bucket.good, 2) and len(kept) == 10
    assert len(list((tmp_path / "abid" / "images").glob("*.jpg"))) == 10


def test_per_class_limit_takes_the_first_ids_of_each_count() -> None:
    labels = {"1000": 1, "01000": 2, "7": 1, "8": 2, "9": 1, "10": 3}
    assert select(labels, 2) == {"1000": 1, "01000": 2, "7": 1, "8": 2, "10": 3}
    assert select(labels, None) == labels


def test_prepare_data_builds_the_cache_training_reads(
    bucket: SimpleNamespace, make_cfg: Callable[..., DictConfig], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = select(bucket.good, 3)
    cfg = prepare_cfg(make_cfg, tmp_path, bucket.url, labels, "prepare.cache=true",
                      "data.image_size=48")
    assert prepare_data(cfg) == 0
    assert "Preprocessed cache (48 px square)" in capsys.readouterr().out
    # What the DataModule does with data.cache=true: the same cache, not rebuilt.
    data = tmp_path / "abid"
    location = ensure_cache(data, cfg.paths.cache_dir, 48, 1, False)
    stamp = (location / "train.json").stat().st_mtime_ns
    test = CachedBinDataset(location, "test", None, [1, 2, 3, 4, 5])
    assert (location / "train.json").stat().st_mtime_ns == stamp
    assert test.ids == [i for i, _ in split_ids(load_manifest(data / "splits.json"), "test")]
    assert min(test.raw(0).shape[1:]) == 48


def test_prepare_data_uploads_and_prints_the_training_channel(
    bucket: SimpleNamespace, make_cfg: Callable[..., DictConfig], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the user's own credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    labels = select(bucket.good, 2)
    bucket.client.create_bucket(Bucket="user-bucket")
    cfg = prepare_cfg(make_cfg, tmp_path, bucket.url, labels,
                      f"prepare.upload_endpoint_url={bucket.url}",
                      "prepare.upload_to=s3://user-bucket/abid")
    assert prepare_data(cfg) == 0
    out = capsys.readouterr().out
    assert "Uploaded 22 files" in out
    assert "SageMaker training channel: s3://user-bucket/abid" in out
    listed = bucket.client.list_objects_v2(Bucket="user-bucket")["Contents"]
    assert len(listed) == 22
    assert prepare_data(cfg) == 0
    assert "Uploaded 0 files (0.0 MB), 22 already there." in capsys.readouterr().out


def test_unparseable_or_unstorable_objects_are_rejected_and_the_run_goes_on(
    bucket: SimpleNamespace, make_cfg: Callable[..., DictConfig], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labels = {**dict(list(bucket.good.items())[:5]), **bucket.hostile}
    assert prepare_data(prepare_cfg(make_cfg, tmp_path, bucket.url, labels)) == 0
    out = capsys.readouterr().out
    data = tmp_path / "abid"
    reasons = {p.name: p.read_text() for p in (data / "rejected").glob("*.reason.txt")}
    assert "nested too deeply" in reasons["90101.json.reason.txt"]
    assert "EXPECTED_QUANTITY must be a non-negative integer" in reasons["90102.json.reason.txt"]
    assert "is 300 characters" in out and "3 bins rejected" in out
    kept = read_file_list(data / "file_list.json")
    assert set(kept) == set(labels) - {"90101", "90102", "9" * 300}
    assert {e["id"] for e in load_manifest(data / "splits.json")["images"]} == set(kept)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
     (b'{"1": [["data/metadata/00001.json"]]}', "is not a metadata path")],
    ids=["deep", "entry-not-a-path"],
)
def test_only_a_bad_file_list_stops_the_run_with_exit_2(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    content: bytes, message: str,
) -> None:
    cfg = prepare_cfg(make_cfg, tmp_path, "http://127.0.0.1:9", {"00001": 1})
    Path(cfg.prepare.file_list).write_bytes(content)
    assert prepare_data(cfg) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg.prepare.file_list}: ") and message in err
    assert "Traceback" not in err and not (tmp_path / "abid" / "images").exists()
