"""prepare_data's settings: checked in one place, before anything is downloaded or written."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from bincount.data.prepare import prepare_data
from bincount.data.settings import PrepareSettings
from bincount.data.splits import ensure_manifest


@pytest.fixture
def prepare_cfg(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str) -> DictConfig:
        return make_cfg(f"paths.data_dir={tmp_path / 'abid'}", "prepare.progress=false",
                        *overrides, name="prepare_data", tiny=False)

    return _make


def test_the_config_defaults_make_valid_settings(prepare_cfg: Callable[..., DictConfig]) -> None:
    settings = PrepareSettings.from_cfg(prepare_cfg("prepare.upload_to=s3://my-bucket/abid/"))
    assert settings.upload_to == ("my-bucket", "abid")
    assert settings.file_list is None and settings.per_class_limit is None
    assert settings.splits == (0.8, 0.1, 0.1) and settings.seed == 42  # data.splits, data.seed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("prepare.per_class_limit=0", "prepare.per_class_limit: expected an integer >= 1, got 0"),
        ("prepare.workers=many", "prepare.workers: expected an integer >= 1, got 'many'"),
        ("prepare.max_attempts=0", "prepare.max_attempts: expected an integer >= 1, got 0"),
        ("prepare.cache=maybe", "prepare.cache: expected true or false, got 'maybe'"),
        ("prepare.seed=-1", "prepare.seed: expected an integer >= 0, got -1"),
        ("prepare.retry_mode=eager",
         "prepare.retry_mode: expected 'standard' or 'adaptive', got 'eager'"),
        ("prepare.splits=[0.5,0.5,0.5]",
         "prepare.splits: expected three non-negative numbers summing to 1, got [0.5, 0.5, 0.5]"),
        ("prepare.upload_to=my-bucket/abid",
         "prepare.upload_to: expected s3://<bucket>/<prefix>, got 'my-bucket/abid'"),
    ],
)
def test_bad_settings_stop_before_anything_is_written(
    prepare_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    override: str, message: str,
) -> None:
    assert prepare_data(prepare_cfg(override)) == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "abid").exists()


def test_a_missing_file_list_is_named(
    prepare_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert prepare_data(prepare_cfg(f"prepare.file_list={tmp_path / 'nope.json'}")) == 2
    assert f"prepare.file_list: {tmp_path / 'nope.json'} does not exist" in capsys.readouterr().err


def test_python_defaults_equal_the_configs(prepare_cfg: Callable[..., DictConfig]) -> None:
    """The one keyword default the data code keeps (never re-split unless asked) is the
    config's, for training (data.*) and for prepare_data (prepare.*)."""
    cfg = prepare_cfg()
    overwrite = inspect.signature(ensure_manifest).parameters["overwrite"].default
    assert overwrite is cfg.data.overwrite_splits is cfg.prepare.overwrite_splits
