"""ONNX export of the count network (dynamic batch), checked against PyTorch before it is kept.

``model.onnx`` sits beside ``model.pt`` in the model directory; ``model.json`` records the check
under ``"onnx"``: the largest absolute difference between the probabilities of ONNX Runtime and
PyTorch on the same inputs, the tolerance, and whether it passed. Serving uses the ONNX model only
when it passed (:mod:`bincount.serving.runtimes`). The int8 model (``scripts/quantize.py``) is
derived from this file, so a new export removes a stale int8 model and its record.

The exporter is torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``: it needs only
``onnx`` (the dynamo exporter also needs ``onnxscript``) and exports torchvision's ResNets exactly.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bincount.data.abid import DataError
from bincount.files import write_json_atomic

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
SPEC_FILE = "model.json"  # as bincount.models.export.SPEC_FILE (which imports this module)
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
OPSET = 17
# ONNX Runtime fp32 and PyTorch agree to ~1e-6 on a ResNet's probabilities; 1e-4 is the contract.
TOLERANCE = 1e-4
CHECK_BATCH = 4  # the check runs a batch of this size (not the export's batch: dynamic axes work)

log = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the probabilities every runtime returns)."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def read_spec_json(model_dir: Path) -> dict[str, Any]:
    """``model.json`` as a dict (with the records later steps added)."""
    path = Path(model_dir) / SPEC_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"{path} is missing: expected an exported model directory") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not a model spec ({err})") from err


def update_spec_json(model_dir: Path, **records: Any) -> dict[str, Any]:
    """Set (or, with None, remove) top-level records of ``model.json``; written atomically."""
    data = read_spec_json(model_dir)
    for key, value in records.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    write_json_atomic(Path(model_dir) / SPEC_FILE, data)
    return data


def random_inputs(image_size: int, n: int = CHECK_BATCH, seed: int = 0) -> torch.Tensor:
    """Normalized-range inputs for the export check when no real images are at hand."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, image_size, image_size, generator=generator)


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` (``threads`` intra-op threads; None: ORT's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_probability_diff(session: Any, net: nn.Module, inputs: torch.Tensor) -> float:
    """Largest |p_onnx - p_torch| over ``inputs`` (a normalized NCHW float batch)."""
    with torch.inference_mode():
        expected = torch.softmax(net.eval()(inputs), dim=1).double().numpy()
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy().astype(np.float32)})
    return float(np.abs(softmax(logits) - expected).max())


def check_record(diff: float, inputs: str, count: int) -> dict[str, Any]:
    finite = bool(np.isfinite(diff))
    return {
        "file": ONNX_FILE,
        "opset": OPSET,
        "max_abs_diff": diff if finite else None,  # None: a runtime gave NaN
        "tolerance": TOLERANCE,
        "inputs": f"{count} {inputs}",
        "passed": finite and diff <= TOLERANCE,
    }


def export_onnx(
    net: nn.Module, image_size: int, model_dir: Path, samples: torch.Tensor | None = None
) -> dict[str, Any]:
    """Write ``model.onnx`` (dynamic batch) and record its check in ``model.json``.

    ``samples``: real, normalized images (NCHW) to check on; random inputs otherwise. A model
    whose probabilities differ by more than :data:`TOLERANCE` is still written (to inspect) but
    marked ``passed: false``, so the server does not pick it.
    """
    model_dir = Path(model_dir)
    net = net.eval().cpu()
    tmp = model_dir / f".{ONNX_FILE}.tmp"
    example = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    inputs, kind = (
        (random_inputs(image_size), "random inputs") if samples is None
        else (samples[:16].float().cpu(), "images")
    )
    diff = max_probability_diff(ort_session(tmp), net, inputs)
    tmp.replace(model_dir / ONNX_FILE)
    (model_dir / INT8_FILE).unlink(missing_ok=True)  # quantized from the previous weights
    record = check_record(diff, kind, len(inputs))
    update_spec_json(model_dir, onnx=record, int8=None)
    if not record["passed"]:
        log.warning("%s differs from PyTorch by %.2g (> %g): it will not be served",
                    model_dir / ONNX_FILE, diff, TOLERANCE)
    return record
