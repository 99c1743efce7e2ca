"""The search space is written once (conf/tune.yaml) and rendered for both backends: Optuna
distributions and SageMaker parameter ranges, which must describe the same space."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from bincount.tuning.search_space import SearchSpaceError, optuna_distributions, sagemaker_ranges

KEYS = {"model.optimizer.lr", "data.batch_size", "trainer.max_epochs"}


def assert_agree(space: DictConfig) -> None:
    """Every Optuna distribution has a SageMaker range with the same bounds, scale, values."""
    optuna, sagemaker = optuna_distributions(space), sagemaker_ranges(space)
    assert set(optuna) == set(sagemaker)
    for key, dist in optuna.items():
        rng = sagemaker[key]
        if isinstance(dist, CategoricalDistribution):
            assert type(rng).__name__ == "CategoricalParameter"
            assert rng.values == [str(c) for c in dist.choices]
            continue
        integer = isinstance(dist, IntDistribution)
        assert type(rng).__name__ == ("IntegerParameter" if integer else "ContinuousParameter")
        assert (float(rng.min_value), float(rng.max_value)) == (dist.low, dist.high)
        assert rng.scaling_type == ("Logarithmic" if dist.log else "Linear")


def test_the_configured_space_is_the_seeds_and_both_renderings_agree(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg(name="tune", tiny=False)
    optuna = optuna_distributions(cfg.search_space)
    assert set(optuna) == KEYS
    assert optuna["model.optimizer.lr"] == FloatDistribution(0.001, 0.1, log=True)
    assert optuna["data.batch_size"] == CategoricalDistribution([32, 64, 128, 256, 512])
    assert optuna["trainer.max_epochs"] == IntDistribution(10, 40)
    assert_agree(cfg.search_space)

    ranges = {k: r.as_tuning_range(k) for k, r in sagemaker_ranges(cfg.search_space).items()}
    assert ranges["model.optimizer.lr"] == {"Name": "model.optimizer.lr", "MinValue": "0.001",
                                            "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    assert ranges["trainer.max_epochs"] == {"Name": "trainer.max_epochs", "MinValue": "10",
                                            "MaxValue": "40", "ScalingType": "Linear"}


def test_one_change_in_config_changes_both_renderings(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg(
        "search_space.lr.high=0.05", "search_space.lr.log=false",
        "search_space.batch_size.choices=[16,48]", "search_space.epochs.low=2",
        "+search_space.wd={key: model.optimizer.weight_decay, type: float, low: 1, high: 3}",
        name="tune", tiny=False,
    )
    optuna = optuna_distributions(cfg.search_space)
    assert optuna["model.optimizer.lr"] == FloatDistribution(0.001, 0.05)
    assert optuna["data.batch_size"] == CategoricalDistribution([16, 48])
    assert optuna["trainer.max_epochs"] == IntDistribution(2, 40)
    # Integer bounds of a float parameter still search floats.
    assert optuna["model.optimizer.weight_decay"] == FloatDistribution(1.0, 3.0)
    assert_agree(cfg.search_space)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"key": "a.b", "type": "float", "low": 0.0, "high": 1.0, "log": True},
         "search_space.p.low: a log scale needs low > 0"),
        ({"key": "a.b", "type": "int", "low": 5, "high": 5}, "low (5) must be below high (5)"),
        ({"key": "a.b", "type": "int", "low": 1.5, "high": 5}, "search_space.p.low: expected"),
        ({"key": "a.b", "type": "normal", "low": 1, "high": 5}, "search_space.p.type: expected"),
        ({"key": "a.b", "type": "categorical", "choices": []}, "search_space.p.choices"),
        ({"key": "a.b", "type": "categorical", "choices": [1, 1]}, "must be distinct"),
        ({"key": "a.b", "type": "float", "low": 1, "high": 2, "step": 1},
         "search_space.p.step: not a field"),
        ({"type": "float", "low": 1, "high": 2}, "search_space.p.key"),
    ],
)
def test_a_malformed_entry_names_its_field(entry: dict, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        optuna_distributions({"p": entry})
    with pytest.raises(SearchSpaceError):
        sagemaker_ranges({"p": entry})
