from __future__ import annotations

import numpy as np

from bincount.monitoring.drift import Thresholds, compare, count_check, mmd_test, psi
from bincount.monitoring.stats import IMAGE_STATS, Profile

T = Thresholds(count_psi=0.2, confidence_ks=0.3, image_ks=0.3, p_value=0.01,
               embedding_p_value=0.01, permutations=200, max_embeddings=256)
BINS = [1, 2, 3, 4, 5]


def profile(rng: np.random.Generator, n: int, shift: float = 0.0,
            counts: list[int] | None = None) -> Profile:
    return Profile(
        counts=counts or [int(c) for c in rng.integers(1, 6, n)],
        confidences=list(rng.uniform(0.4, 0.9, n) - shift / 4),
        images={k: list(rng.normal(1.0 + shift, 0.1, n)) for k in IMAGE_STATS},
        embeddings=rng.normal(shift, 1.0, (n, 16)).astype(np.float32),
    )


def test_psi_is_zero_for_the_same_shares_and_large_for_a_shift() -> None:
    same = np.array([10, 20, 30.0])
    assert psi(same, same * 3) == 0
    assert psi(same, np.array([30, 20, 10.0])) > 0.2
    # a count never predicted on one side is floored, not infinite
    assert np.isfinite(psi(np.array([10, 0.0]), np.array([0, 10.0])))


def test_count_check_flags_a_collapse_onto_one_count() -> None:
    rng = np.random.default_rng(0)
    base = profile(rng, 200)
    assert not count_check(base, profile(rng, 100), BINS, T).violated
    collapsed = count_check(base, profile(rng, 100, counts=[1] * 100), BINS, T)
    assert collapsed.violated and collapsed.p_value < 1e-6


def test_mmd_permutation_test_separates_shifted_embeddings() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (80, 8))
    _, p_same = mmd_test(x, rng.normal(0, 1, (60, 8)), 200)
    value, p_shift = mmd_test(x, rng.normal(0.7, 1, (60, 8)), 200)
    assert p_same > 0.05
    assert p_shift < 0.01 and value > 0


def test_same_distribution_passes_every_check_and_a_shift_fails_each() -> None:
    rng = np.random.default_rng(2)
    base = profile(rng, 150)
    same = compare(base, profile(rng, 60), BINS, T)
    assert [c.name for c in same if c.violated] == []
    shifted = compare(base, profile(rng, 60, shift=1.0, counts=[5] * 60), BINS, T)
    violated = {c.name for c in shifted if c.violated}
    assert violated == {c.name for c in shifted}
    assert "VIOLATION" in shifted[0].line() and "image brightness" in violated
