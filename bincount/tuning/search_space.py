"""The search space, written once in config and rendered for both backends.

``search_space`` in conf/tune.yaml maps a short name to the Hydra override key it sets and its
range::

    lr:         {key: model.optimizer.lr, type: float, low: 0.001, high: 0.1, log: true}
    batch_size: {key: data.batch_size, type: categorical, choices: [32, 64, 128, 256, 512]}
    epochs:     {key: trainer.max_epochs, type: int, low: 10, high: 40}

:func:`optuna_distributions` renders it as Optuna distributions (the Optuna sweeper's space),
:func:`sagemaker_ranges` as SageMaker Continuous/Integer/Categorical parameter ranges; a sweep
on the command line (``model.optimizer.lr=tag(log, interval(0.01, 0.05))``) becomes an Optuna
distribution through :func:`sweep_distribution`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from bincount.errors import BincountError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from optuna.distributions import BaseDistribution
    from sagemaker.parameter import ParameterRange

TYPES = ("float", "int", "categorical")


class SearchSpaceError(BincountError):
    """The ``search_space`` config is malformed."""


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: ``key`` is the Hydra override it sets."""

    name: str
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


def parse_space(space: Mapping[str, Any] | DictConfig) -> list[Param]:
    """Validate ``search_space`` and return its entries, naming the offending field on error."""
    if isinstance(space, DictConfig):
        space = OmegaConf.to_container(space, resolve=True)
    if not isinstance(space, Mapping) or not space:
        raise SearchSpaceError("search_space: expected a mapping of name -> {key, type, ...}")
    params = [_parse_param(str(name), spec) for name, spec in space.items()]
    keys = [p.key for p in params]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise SearchSpaceError(f"search_space: key {duplicated[0]} is searched twice")
    return params


def _parse_param(name: str, spec: Any) -> Param:
    where = f"search_space.{name}"
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(f"{where}: expected a mapping with key and type, got {spec!r}")
    key, kind = spec.get("key"), spec.get("type")
    if not isinstance(key, str) or not key or "=" in key:
        raise SearchSpaceError(f"{where}.key: expected a config key like model.optimizer.lr")
    if kind not in TYPES:
        raise SearchSpaceError(f"{where}.type: expected one of {', '.join(TYPES)}, got {kind!r}")
    allowed = {"key", "type", "choices"} if kind == "categorical" else {
        "key", "type", "low", "high", "log"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SearchSpaceError(f"{where}.{unknown[0]}: not a field of a {kind} parameter")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise SearchSpaceError(f"{where}.choices: expected a non-empty list")
        if len(set(map(str, choices))) != len(choices):
            raise SearchSpaceError(f"{where}.choices: values must be distinct")
        if not all(isinstance(c, str | int | float | bool) for c in choices):
            raise SearchSpaceError(f"{where}.choices: expected numbers, strings or booleans")
        return Param(name, key, kind, choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    number = int if kind == "int" else (int, float)
    for field, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise SearchSpaceError(f"{where}.{field}: expected a finite {kind}, got {value!r}")
    if not low < high:
        raise SearchSpaceError(f"{where}: low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}.low: a log scale needs low > 0, got {low}")
    return Param(name, key, kind, low=low, high=high, log=log)


def optuna_distributions(space: Mapping[str, Any] | DictConfig) -> dict[str, BaseDistribution]:
    """``{override key: Optuna distribution}``: what the Optuna sweeper asks each trial for."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions: dict[str, BaseDistribution] = {}
    for p in parse_space(space):
        if p.type == "categorical":
            distributions[p.key] = CategoricalDistribution(list(p.choices))
        elif p.type == "int":
            distributions[p.key] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:  # integer bounds of a float parameter still search floats
            distributions[p.key] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    return distributions


def sweep_distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of a sweep on the command line, in Hydra's override grammar:
    ``choice(a, b)`` / ``a,b`` (categorical), ``range(1, 9, 2)`` (its values, stepped),
    ``interval(a, b)`` (float, or int when both ends are; ``tag(log, ...)`` for a log scale)."""
    from hydra.core.override_parser.types import IntervalSweep, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key = override.get_key_element()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise SearchSpaceError(f"{override.input_line}: the range is empty")
        if all(isinstance(v, int) for v in values) and isinstance(value.step, int):
            return IntDistribution(values[0], values[-1], step=value.step)
        return CategoricalDistribution(values)  # a float step: exactly the values it lists
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        low, high, log = value.start, value.end, "log" in value.tags
        if not low < high:
            raise SearchSpaceError(f"{key}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise SearchSpaceError(f"{key}: a log scale needs low > 0, got {low}")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(f"{override.input_line}: not a sweep the Optuna sweeper can search")


def sagemaker_ranges(space: Mapping[str, Any] | DictConfig) -> dict[str, ParameterRange]:
    """``{hyperparameter name: range}`` for a SageMaker HyperparameterTuner. The names are the
    override keys, as the SageMaker launcher passes overrides as hyperparameters."""
    from sagemaker.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter

    ranges: dict[str, ParameterRange] = {}
    for p in parse_space(space):
        if p.type == "categorical":
            ranges[p.key] = CategoricalParameter(list(p.choices))
            continue
        scaling = "Logarithmic" if p.log else "Linear"  # never "Auto": Optuna's scale is explicit
        kind = IntegerParameter if p.type == "int" else ContinuousParameter
        ranges[p.key] = kind(p.low, p.high, scaling_type=scaling)
    return ranges
