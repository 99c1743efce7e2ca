"""The exported inference artifact: ``model.pt`` (a state dict) + ``model.json`` + ``model.onnx``.

Serving loads only this directory: it never needs Lightning, Hydra or a checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bincount.data.abid import DataError
from bincount.files import atomic_path, write_json_atomic
from bincount.models.backbone import build_net
from bincount.models.heads import HEADS
from bincount.models.onnx import export_onnx

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model.json"


@dataclass(frozen=True)
class ModelSpec:
    """What a server needs besides the weights: how to build the net and feed it."""

    arch: str
    image_size: int
    mean: list[float]
    std: list[float]
    counts: list[int]
    name: str = "bincount"
    version: str = "0"
    # Absent from a model.json written before they existed: those values mean "as before".
    head: str = "softmax"  # model.head: softmax | ordinal (the net outputs class scores either way)
    temperature: float = 1.0  # probabilities = softmax(scores / temperature), fit on val
    reconcile: dict[str, Any] | None = None  # bincount.models.reconcile.Thresholds' record
    # The same, fitted on the mean of each validation image's and its mirror's probabilities:
    # what a server with tta=hflip decides by (absent: it falls back to "reconcile").
    reconcile_hflip: dict[str, Any] | None = None

    def count_of(self, class_index: int) -> int:
        return self.counts[class_index]


def export_model(
    net: nn.Module, spec: ModelSpec, model_dir: Path, samples: torch.Tensor | None = None
) -> Path:
    """Write weights and spec, then ``model.onnx`` checked against the weights on ``samples``
    (real normalized images; random inputs without them). Each file goes to a temporary name
    first; an ONNX export that fails leaves a torch-only model directory (and says why)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(model_dir / WEIGHTS_FILE) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    write_json_atomic(model_dir / SPEC_FILE, asdict(spec))
    try:
        export_onnx(net, spec.image_size, model_dir, samples)
    except Exception as err:  # the torch model is complete without it
        log.warning("no ONNX model exported (%s: %s); serving will use torch",
                    type(err).__name__, err)
    return model_dir


def load_spec(model_dir: Path) -> ModelSpec:
    path = Path(model_dir) / SPEC_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing: expected an exported model directory")
    try:
        data = json.loads(path.read_text())
        # Later steps add records (the ONNX check, the int8 accuracy check) beside the spec.
        return ModelSpec(**{f.name: data[f.name] for f in fields(ModelSpec) if f.name in data})
    except (json.JSONDecodeError, TypeError) as err:
        raise DataError(f"{path}: not a model spec ({err})") from err


def load_model(
    model_dir: Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the net from ``model.json`` (its arch, counts and head) and load ``model.pt`` with
    ``weights_only=True``."""
    spec = load_spec(model_dir)
    if spec.head not in HEADS:
        raise DataError(f"{Path(model_dir) / SPEC_FILE}: head must be one of "
                        f"{', '.join(HEADS)}, got {spec.head!r}")
    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise DataError(f"{weights} is missing: expected the exported weights")
    net = build_net(spec.arch, num_classes=len(spec.counts), pretrained=False, head=spec.head)
    net.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True))
    return net.eval(), spec
