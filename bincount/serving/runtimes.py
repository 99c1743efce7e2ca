"""What runs the network behind the handlers: PyTorch eager, ONNX Runtime fp32, or ONNX Runtime
int8 (static QDQ, ``scripts/quantize.py``). Every runtime takes the same normalized batch (the
evaluation transform of ``model.json``) and returns the same float64 probabilities, so the
handlers, the JSON and the 4xx behaviour do not depend on the choice.

A runtime is usable when its file is in the model directory and ``model.json`` records that it
passed its check: the ONNX model matched PyTorch (``"onnx"``), the int8 model kept its accuracy
or was forced (``"int8"``). ``auto`` picks the fastest usable one (PyTorch on a GPU).

The choice and the thread count come from ``serve.runtime`` / ``serve.torch_threads`` locally and
from the environment (``BINCOUNT_RUNTIME``, ``BINCOUNT_THREADS``) inside the SageMaker container.
One pool runs the network: its intra-op threads are the usable cores; with ONNX Runtime, torch
(which then only normalizes images) gets one thread, so the two pools do not spin against each
other on the same cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bincount.data.abid import DataError
from bincount.models.export import WEIGHTS_FILE, load_model
from bincount.models.onnx import (
    INPUT_NAME,
    INT8_FILE,
    ONNX_FILE,
    OUTPUT_NAME,
    ort_session,
    read_spec_json,
    softmax,
)

AUTO = "auto"
RUNTIMES = ("int8", "onnx", "torch")  # fastest first on a CPU
CHOICES = (AUTO, *RUNTIMES)
FILES = {"torch": WEIGHTS_FILE, "onnx": ONNX_FILE, "int8": INT8_FILE}
RUNTIME_ENV = "BINCOUNT_RUNTIME"
THREADS_ENV = "BINCOUNT_THREADS"


class RuntimeUnavailable(DataError):
    """The runtime asked for cannot serve this model directory (the reason says why)."""


class Runtime(Protocol):
    name: str
    device: torch.device  # where input batches go

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Normalized NCHW float batch -> (N, classes) float64 probabilities."""


@dataclass
class TorchRuntime:
    net: nn.Module
    device: torch.device
    name: str = "torch"

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            logits = self.net(batch.to(self.device))
        return softmax(logits.float().cpu().numpy())


@dataclass
class OrtRuntime:
    session: Any  # onnxruntime.InferenceSession
    name: str
    device: torch.device = torch.device("cpu")

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        inputs = np.ascontiguousarray(batch.cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
        return softmax(logits)


def usable_cpus() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def why_unusable(model_dir: Path, name: str, spec: dict[str, Any] | None = None) -> str | None:
    """None when runtime ``name`` can serve ``model_dir``; else the reason."""
    model_dir = Path(model_dir)
    path = model_dir / FILES[name]
    if not path.is_file():
        hint = {"onnx": "train again (it exports model.onnx) or run scripts/quantize.py",
                "int8": f"run scripts/quantize.py model_dir={model_dir}",
                "torch": "expected the exported weights"}[name]
        return f"{path} is missing ({hint})"
    if name == "torch":
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime)"
    record = (read_spec_json(model_dir) if spec is None else spec).get(name)
    if not isinstance(record, dict):
        return f"{model_dir / 'model.json'} has no {name!r} check for {path.name}"
    if name == "onnx" and not record.get("passed"):
        return (f"{path.name} failed its check: probabilities differ from PyTorch by "
                f"{record.get('max_abs_diff')} (> {record.get('tolerance')})")
    if name == "int8" and not record.get("serve"):
        return (f"{path.name} lost {record.get('accuracy_drop')} accuracy on the validation "
                f"split (more than quantize.max_accuracy_drop={record.get('max_accuracy_drop')}): "
                "re-run scripts/quantize.py with quantize.force=true to serve it anyway")
    return None


def usable_runtimes(model_dir: Path) -> dict[str, str | None]:
    """Each runtime -> None (usable) or why not, fastest first."""
    spec = read_spec_json(model_dir)
    return {name: why_unusable(model_dir, name, spec) for name in RUNTIMES}


def choose_runtime(
    model_dir: Path, requested: str, key: str = "serve.runtime", gpu: bool | None = None
) -> str:
    """The runtime to load: ``requested`` if usable, or with ``auto`` the fastest usable one
    (PyTorch, if it is there, when there is a GPU: ``gpu``, or None for this machine's). A
    refusal names ``key`` and the reason."""
    if requested not in CHOICES:
        raise DataError(f"{key}: expected one of {', '.join(CHOICES)}, got {requested!r}")
    if requested == AUTO:
        status = usable_runtimes(model_dir)
        on_gpu = torch.cuda.is_available() if gpu is None else gpu
        if on_gpu and status["torch"] is None:
            return "torch"
        return next(name for name, why in status.items() if why is None or name == "torch")
    why = why_unusable(model_dir, requested)
    if why is not None:
        raise RuntimeUnavailable(f"{key}={requested} cannot serve {model_dir}: {why}")
    return requested


def set_threads(name: str, threads: int) -> None:
    """Torch's intra-op threads on the calling thread (OpenMP's setting is per thread): all of
    them for the torch runtime, one beside ONNX Runtime's pool."""
    torch.set_num_threads(threads if name == "torch" else 1)


def load_runtime(model_dir: Path, name: str, threads: int) -> Runtime:
    """Load runtime ``name`` (already chosen) for ``model_dir`` with ``threads`` intra-op
    threads."""
    model_dir = Path(model_dir)
    if name == "torch":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net, _ = load_model(model_dir, map_location=device)
        return TorchRuntime(net=net.to(device), device=device)
    return OrtRuntime(session=ort_session(model_dir / FILES[name], threads), name=name)


def runtime_from_env(model_dir: Path) -> tuple[str, int]:
    """(runtime, threads) from ``BINCOUNT_RUNTIME`` (default auto) and ``BINCOUNT_THREADS``
    (default: the usable cores): what ``model_fn`` loads inside the SageMaker container."""
    requested = os.environ.get(RUNTIME_ENV, AUTO).strip().lower() or AUTO
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise ValueError(f"environment variable {THREADS_ENV} must be a positive integer, "
                         f"got {raw!r}")
    return choose_runtime(model_dir, requested, key=RUNTIME_ENV), int(raw) if raw else usable_cpus()
