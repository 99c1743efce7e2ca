"""Debugger-style rules that watch every training run from inside the Lightning loop: the
local counterparts of SageMaker Debugger's built-in rules (configured in ``conf/rules/``)."""

from bincount.callbacks.rules.activations import PoorWeightInitialization
from bincount.callbacks.rules.base import Rule, read_rules_file
from bincount.callbacks.rules.divergence import LossDivergence
from bincount.callbacks.rules.gradients import ExplodingTensor, VanishingGradient
from bincount.callbacks.rules.loss import LossNotDecreasing, Overfit, Overtraining
from bincount.callbacks.rules.system import DataLoaderBound, LowGPUUtilization

__all__ = [
    "DataLoaderBound",
    "ExplodingTensor",
    "LossDivergence",
    "LossNotDecreasing",
    "LowGPUUtilization",
    "Overfit",
    "Overtraining",
    "PoorWeightInitialization",
    "Rule",
    "VanishingGradient",
    "read_rules_file",
]
