"""What runs the network behind the handlers: PyTorch eager, ONNX Runtime fp32, or ONNX Runtime
int8 (static QDQ, ``scripts/quantize.py``). Every runtime takes the same normalized batch (the
evaluation transform of ``model.json``) and returns the same float64 probabilities, so the
handlers, the JSON and the 4xx behaviour do not depend on the choice.

Every runtime returns calibrated probabilities: ``softmax(scores / temperature)`` with the
temperature ``model.json`` records (1 when it has none), so every consumer (the handlers,
predict, quantize) gets the same calibrated numbers. Test-time augmentation (``tta: hflip``,
``BINCOUNT_TTA`` in the container) wraps any runtime: one forward of the batch and its mirror,
the two probabilities averaged. A runtime is checked once at load: one batch must give finite
probabilities, or the model is refused naming its file.

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
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bincount.cpus import usable_cpus
from bincount.data.abid import DataError
from bincount.models.export import WEIGHTS_FILE, ModelSpec, load_model, load_spec
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
TTA_ENV = "BINCOUNT_TTA"
TTA_CHOICES = ("none", "hflip")


class RuntimeUnavailable(DataError):
    """The runtime asked for cannot serve this model directory (the reason says why)."""


class Runtime(Protocol):
    name: str
    device: torch.device  # where input batches go

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Normalized NCHW float batch -> (N, classes) float64 probabilities."""


def calibrated(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(scores / temperature)`` in float64: the calibrated class probabilities."""
    return softmax(scores.astype(np.float64) / temperature)


@dataclass
class TorchRuntime:
    net: nn.Module
    device: torch.device
    temperature: float  # model.json's; 1.0: the plain softmax
    name: str = "torch"

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            scores = self.net(batch.to(self.device))
        return calibrated(scores.float().cpu().numpy(), self.temperature)


@dataclass
class OrtRuntime:
    session: Any  # onnxruntime.InferenceSession
    name: str
    temperature: float
    device: torch.device = torch.device("cpu")

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        inputs = np.ascontiguousarray(batch.cpu().numpy(), dtype=np.float32)
        (scores,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
        return calibrated(scores, self.temperature)


@dataclass
class HflipRuntime:
    """``tta: hflip``: the mean of the calibrated probabilities of each image and its
    horizontal mirror, from one forward pass of the doubled batch."""

    inner: Runtime

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        both = self.inner.probabilities(torch.cat([batch, batch.flip(-1)]))
        return (both[: len(batch)] + both[len(batch):]) / 2


def with_tta(runtime: Runtime, tta: str, key: str = "serve.tta") -> Runtime:
    """``runtime`` with test-time augmentation ``tta`` (``none`` or ``hflip``)."""
    if tta not in TTA_CHOICES:
        raise DataError(f"{key}: expected one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    return HflipRuntime(runtime) if tta == "hflip" else runtime


def tta_from_env() -> str:
    """``BINCOUNT_TTA`` (unset: none), checked: what ``model_fn`` applies in the container."""
    value = os.environ.get(TTA_ENV, "").strip().lower() or "none"
    if value not in TTA_CHOICES:
        raise ValueError(f"environment variable {TTA_ENV} must be one of "
                         f"{', '.join(TTA_CHOICES)}, got {value!r}")
    return value


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
    threads and the temperature of ``model.json``, and check it on one batch: a model file that
    cannot be loaded or gives non-finite probabilities is refused with a one-line
    :class:`DataError` naming the file."""
    model_dir = Path(model_dir)
    spec = load_spec(model_dir)
    temperature = check_temperature(spec, model_dir)
    runtime: Runtime
    if name == "torch":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net, _ = load_checked(model_dir, device)
        runtime = TorchRuntime(net=net.to(device), device=device, temperature=temperature)
    else:
        path = model_dir / FILES[name]
        try:
            session = ort_session(path, threads)
        except Exception as err:  # onnxruntime raises its own types for a damaged file
            raise DataError(f"{path} cannot be loaded by ONNX Runtime: {one_line(err)}") from err
        runtime = OrtRuntime(session=session, name=name, temperature=temperature)
    check_finite(runtime, spec, model_dir / FILES[name])
    return runtime


def check_temperature(spec: ModelSpec, model_dir: Path) -> float:
    temperature = spec.temperature
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) \
            or not np.isfinite(temperature) or temperature <= 0:
        raise DataError(f"{model_dir / 'model.json'}: temperature must be a positive number, "
                        f"got {temperature!r}")
    return float(temperature)


def check_finite(runtime: Runtime, spec: ModelSpec, path: Path) -> None:
    """One forward of a small batch (a mid-grey image and a noisy one): its probabilities must
    be finite, else the file cannot serve (a diverged export, a damaged file)."""
    generator = torch.Generator().manual_seed(0)
    size = spec.image_size
    batch = torch.stack([torch.zeros(3, size, size),
                         torch.randn(3, size, size, generator=generator)])
    probabilities = runtime.probabilities(batch)
    if not np.isfinite(probabilities).all():
        raise DataError(f"{path} gives NaN or infinite probabilities on a check batch: this "
                        "model cannot serve: train (or export) it again")


def one_line(err: BaseException, limit: int = 240) -> str:
    reason = " ".join(str(err).split())
    return f"{type(err).__name__}: {reason[:limit] + ' ...' if len(reason) > limit else reason}"


def load_checked(model_dir: Path, device: torch.device) -> tuple[nn.Module, ModelSpec]:
    """:func:`load_model`, with every way ``model.pt`` can be wrong said in one line."""
    weights = model_dir / WEIGHTS_FILE
    try:
        net, spec = load_model(model_dir, map_location=device)
    except DataError:
        raise
    except pickle.UnpicklingError as err:  # torch's text would suggest weights_only=False
        raise DataError(
            f"{weights} is not a state dict of tensors as torch.save writes it (a damaged file, "
            "or one holding other objects or code, which are never loaded): export the model "
            "again with the training run"
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{weights} cannot be loaded as the weights model.json describes "
            f"({spec_text(model_dir)}): {one_line(err)}"
        ) from err
    tensors = {name: t for name, t in net.state_dict().items() if t.is_floating_point()}
    broken = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if broken:
        raise DataError(
            f"{weights}: {len(broken)} of {len(tensors)} weight tensors hold NaN or infinite "
            f"values (first: {broken[0]}); this model cannot serve: train it again"
        )
    return net, spec


def spec_text(model_dir: Path) -> str:
    """What model.json says the net is, in a few words (it was read before the weights)."""
    try:
        spec = load_spec(model_dir)
    except DataError:
        return "unreadable"
    return f"arch {spec.arch}, {len(spec.counts)} counts"


def runtime_from_env(model_dir: Path) -> tuple[str, int]:
    """(runtime, threads) from ``BINCOUNT_RUNTIME`` (default auto) and ``BINCOUNT_THREADS``
    (default: the usable cores): what ``model_fn`` loads inside the SageMaker container."""
    requested = os.environ.get(RUNTIME_ENV, AUTO).strip().lower() or AUTO
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise ValueError(f"environment variable {THREADS_ENV} must be a positive integer, "
                         f"got {raw!r}")
    return choose_runtime(model_dir, requested, key=RUNTIME_ENV), int(raw) if raw else usable_cpus()
