"""The command-line guard every script runs before Hydra parses its arguments."""

from __future__ import annotations

import pytest

from bincount.cli import refuse_null_groups
from bincount.config import check_paths
from bincount.errors import BincountError
from tests.support.paths import CONF


def test_a_group_set_to_null_exits_2_naming_the_fix_and_the_choices(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        refuse_null_groups(["trainer=cpu", "profiler=null"], CONF)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "profiler=null: 'profiler' is a config group; remove it with '~profiler'" in err
    choices = sorted(p.stem for p in (CONF / "profiler").glob("*.yaml"))
    assert f"choose one of: {', '.join(choices)}" in err


def test_a_key_set_to_null_is_not_a_group_and_passes() -> None:
    refuse_null_groups(["model.optimizer.weight_decay=null", "seed=null", "trainer=cpu"], CONF)


def test_a_path_setting_that_is_a_file_is_refused_naming_the_key(
        make_cfg, tmp_path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("not a directory")
    with pytest.raises(BincountError, match=f"paths.cache_dir: {afile} is a file; expected a "
                                            "directory"):
        check_paths(make_cfg(f"paths.cache_dir={afile}"))
    check_paths(make_cfg())  # the defaults are fine
