from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bincount.data.abid import DataError
from bincount.monitoring.baseline import BASELINE_FILE, EMBEDDINGS_FILE, load_baseline
from bincount.monitoring.stats import IMAGE_STATS


@pytest.mark.slow  # renders a synthetic set and profiles it (~8 s)
def test_baseline_profiles_every_val_image(baseline_model: Path) -> None:
    data = json.loads((baseline_model / BASELINE_FILE).read_text())
    baseline = load_baseline(baseline_model)
    n = data["images"]
    assert n == 60  # 75% of 5 x 16
    assert len(baseline.profile.counts) == len(baseline.profile.confidences) == n
    assert set(baseline.profile.counts) <= {1, 2, 3, 4, 5}
    assert all(0.2 <= c <= 1 for c in baseline.profile.confidences)  # the max of 5 probabilities
    assert all(len(baseline.profile.images[k]) == n for k in IMAGE_STATS)
    assert set(baseline.profile.images["width"]) == {64.0}
    embeddings = np.load(baseline_model / EMBEDDINGS_FILE)
    assert embeddings.shape == (n, 512)  # resnet18's pooled features
    assert np.isfinite(embeddings).all()
    assert baseline.counts == [1, 2, 3, 4, 5]


def test_missing_baseline_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="write_baseline"):
        load_baseline(tmp_path)


@pytest.mark.slow
def test_damaged_baseline_names_the_file(baseline_model: Path, tmp_path: Path) -> None:
    for name in (BASELINE_FILE, EMBEDDINGS_FILE):
        (tmp_path / name).write_bytes((baseline_model / name).read_bytes())
    (tmp_path / BASELINE_FILE).write_text('{"counts": [1]}')
    with pytest.raises(DataError, match="baseline.json: not a monitoring baseline"):
        load_baseline(tmp_path)
