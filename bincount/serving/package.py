"""The SageMaker model artifact: ``model.json``, the runtime's model file and ``code/``.

The artifact carries one runtime: ``model.pt`` (torch), ``model.onnx`` (ONNX Runtime fp32) or
``model.int8.onnx`` (int8), so the endpoint downloads only what it runs.
``code/inference.py`` is :mod:`bincount.serving.handlers` itself; ``code/bincount/`` holds the
package modules it imports (found by reading their imports, so nothing is listed by hand) and
``code/requirements.txt`` what the PyTorch inference image lacks: nothing for torch (it has
torch, torchvision and Pillow), ``onnxruntime`` (the version here) for the ONNX runtimes.
"""

from __future__ import annotations

import ast
import shutil
import tarfile
from pathlib import Path

import bincount
from bincount.data.abid import DataError
from bincount.models.export import SPEC_FILE, ModelSpec, load_spec
from bincount.serving import handlers
from bincount.serving.runtimes import FILES

ENTRY_POINT = "inference.py"
REQUIREMENTS = "requirements.txt"
PACKAGE_ROOT = Path(bincount.__file__).resolve().parent
REQUIREMENTS_TEXT = """\
# Installed by the SageMaker PyTorch inference toolkit at start-up (pip install -r).
# The handlers need torch, torchvision and Pillow, which the PyTorch inference image has;
# the bincount modules they import are shipped beside inference.py.
"""


def requirements_text(runtime: str) -> str:
    """``code/requirements.txt`` for a model tree that carries ``runtime``."""
    if runtime == "torch":
        return REQUIREMENTS_TEXT
    import onnxruntime

    return (f"{REQUIREMENTS_TEXT}# The {runtime} model runs on ONNX Runtime, pinned to the "
            f"version that exported and checked it.\nonnxruntime=={onnxruntime.__version__}\n")


def check_model_dir(model_dir: Path) -> ModelSpec:
    """The spec of an exported model directory; a clear error if it is not one (it holds
    ``model.json`` and at least one runtime's model file)."""
    spec = load_spec(Path(model_dir))
    if not any((Path(model_dir) / name).is_file() for name in FILES.values()):
        weights = Path(model_dir) / FILES["torch"]
        raise DataError(f"{weights} is missing: expected the exported weights")
    return spec


def module_file(name: str) -> Path | None:
    """The source file of ``bincount.<...>`` module ``name`` (None if it is not one)."""
    parts = name.split(".")
    if parts[0] != PACKAGE_ROOT.name:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Names of the ``bincount`` modules that ``path`` imports (a ``from`` target may be one)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if module_file(name) is not None}


def handler_dependencies() -> list[Path]:
    """Every ``bincount`` source file the handlers need, with the package ``__init__`` files."""
    seen: set[Path] = set()
    todo = [Path(handlers.__file__).resolve()]
    while todo:
        path = todo.pop()
        for name in imported_modules(path):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return sorted(seen)


def stage_code(code_dir: Path, runtime: str = "torch") -> Path:
    """Write ``inference.py``, ``requirements.txt`` (for ``runtime``) and the ``bincount``
    modules to ``code_dir``."""
    code_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(handlers.__file__, code_dir / ENTRY_POINT)
    (code_dir / REQUIREMENTS).write_text(requirements_text(runtime))
    for source in handler_dependencies():
        target = code_dir / PACKAGE_ROOT.name / source.relative_to(PACKAGE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return code_dir


def model_files(model_dir: Path, runtime: str) -> list[str]:
    """What the artifact of ``runtime`` (already chosen) carries from ``model_dir``."""
    check_model_dir(model_dir)
    name = FILES[runtime]
    if not (Path(model_dir) / name).is_file():
        raise DataError(f"{Path(model_dir) / name} is missing: runtime {runtime} needs it")
    return [name, SPEC_FILE]


def stage_model_tree(model_dir: Path, dest: Path, runtime: str = "torch") -> Path:
    """A SageMaker model directory: the runtime's model file and spec, and the handlers under
    ``code/``. This is what the inference container sees as ``/opt/ml/model``.
    """
    files = model_files(model_dir, runtime)
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(Path(model_dir) / name, dest / name)
    stage_code(dest / "code", runtime)
    return dest


def weights_archive(model_dir: Path, archive: Path, runtime: str = "torch") -> Path:
    """``model.tar.gz`` with only the runtime's model file and the spec; the SDK adds ``code/``
    when it repacks."""
    files = model_files(model_dir, runtime)
    tmp = archive.with_name(f".{archive.name}.tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:  # weights hardly compress
        for name in files:
            tar.add(Path(model_dir) / name, arcname=name)
    tmp.replace(archive)
    return archive
