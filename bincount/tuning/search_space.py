"""The search space, written once in config and rendered for both backends.

``search_space`` in conf/tune.yaml maps a short name to the Hydra override key it sets and its
range::

    lr:         {key: model.optimizer.lr, type: float, low: 0.001, high: 0.1, log: true}
    batch_size: {key: data.batch_size, type: categorical, choices: [32, 64, 128, 256, 512]}
    epochs:     {key: trainer.max_epochs, type: int, low: 10, high: 40}

:func:`optuna_params` renders it as Hydra Optuna sweeper params (override-grammar strings),
:func:`sagemaker_ranges` as SageMaker Continuous/Integer/Categorical parameter ranges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from bincount.errors import BincountError

if TYPE_CHECKING:
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


def optuna_params(space: Mapping[str, Any] | DictConfig) -> dict[str, str]:
    """``{override key: sweep}`` in Hydra's override grammar, as the Optuna sweeper's ``params``
    (``tag(log, interval(a, b))``, ``int(interval(a, b))``, ``choice(...)``)."""
    rendered: dict[str, str] = {}
    for p in parse_space(space):
        if p.type == "categorical":
            sweep = f"choice({', '.join(_literal(c) for c in p.choices)})"
        else:
            sweep = f"interval({p.low!r}, {p.high!r})"
            if p.type == "int":
                sweep = f"int({sweep})"
            elif isinstance(p.low, int) and isinstance(p.high, int):
                sweep = f"float({sweep})"  # interval(1, 5) of ints would search integers
            if p.log:
                sweep = f"tag(log, {sweep})"
        rendered[p.key] = sweep
    return rendered


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value).lower() if isinstance(value, bool) else repr(value)


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
