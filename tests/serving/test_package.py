"""The model archive's contents: ``code/inference.py`` is the handlers, ``code/bincount/`` the
package modules they import and nothing else (no test fakes, benchmarks or server helpers),
and the weights archive holds only the chosen runtime's model file and the spec."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from pathlib import Path

from bincount.models.export import SPEC_FILE, WEIGHTS_FILE
from bincount.serving import handlers
from bincount.serving.package import (
    ENTRY_POINT,
    REQUIREMENTS,
    stage_code,
    stage_model_tree,
    weights_archive,
)
from tests.support.serving import assert_runtime_only, imports_of

ONNX_FILE = "model.onnx"


def tree_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def python_modules(names: Iterable[str]) -> set[str]:
    return {name for name in names if name.endswith(".py")}


def test_code_holds_the_handlers_and_only_the_modules_they_import(tmp_path: Path) -> None:
    code = stage_code(tmp_path / "code")
    files = tree_files(code)
    assert files[ENTRY_POINT] == Path(handlers.__file__).read_bytes()
    assert REQUIREMENTS in files
    assert_runtime_only(files)
    shipped = python_modules(files) - {ENTRY_POINT}
    assert "bincount/models/export.py" in shipped and "bincount/data/transforms.py" in shipped
    # serving itself only as inference.py, the request decoding and the runtimes it loads
    # (never server or SDK code)
    assert {n for n in shipped if n.startswith("bincount/serving")} == {
        "bincount/serving/__init__.py", "bincount/serving/inputs.py",
        "bincount/serving/runtimes.py"}
    assert "onnxruntime" not in files[REQUIREMENTS].decode()  # the torch image has what it needs
    # Every shipped module is imported by one shipped beside it (nothing extra tags along).
    imported = set()
    for name, data in files.items():
        if name.endswith(".py"):
            imported |= {module for module in imports_of(data.decode())
                         if module.startswith("bincount")}
    for name in shipped - {p for p in shipped if p.endswith("__init__.py")}:
        assert name.removesuffix(".py").replace("/", ".") in imported, name


def test_the_model_tree_is_what_the_container_sees_as_opt_ml_model(
    model_dir: Path, tmp_path: Path
) -> None:
    tree = stage_model_tree(model_dir, tmp_path / "model")
    assert sorted(p.name for p in tree.iterdir()) == ["code", SPEC_FILE, WEIGHTS_FILE]
    assert (tree / WEIGHTS_FILE).read_bytes() == (model_dir / WEIGHTS_FILE).read_bytes()
    assert_runtime_only(tree_files(tree / "code"))


def test_the_weights_archive_holds_the_weights_and_spec_only(
    model_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "model"  # the real spec; stand-in weights (packing never reads them)
    source.mkdir()
    (source / SPEC_FILE).write_bytes((model_dir / SPEC_FILE).read_bytes())
    (source / WEIGHTS_FILE).write_bytes(b"weights")
    (source / "notes.txt").write_text("not part of a model")
    out = tmp_path / "out"
    out.mkdir()
    archive = weights_archive(source, out / "model.tar.gz")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [SPEC_FILE, WEIGHTS_FILE]
        assert tar.extractfile(WEIGHTS_FILE).read() == b"weights"  # type: ignore[union-attr]
    assert [p.name for p in out.iterdir()] == ["model.tar.gz"]  # no temporary left


def test_an_onnx_artifact_carries_model_onnx_and_installs_onnxruntime(
    model_dir: Path, tmp_path: Path
) -> None:
    import onnxruntime

    tree = stage_model_tree(model_dir, tmp_path / "model", runtime="onnx")
    assert sorted(p.name for p in tree.iterdir()) == ["code", SPEC_FILE, ONNX_FILE]
    requirements = (tree / "code" / REQUIREMENTS).read_text().splitlines()
    assert f"onnxruntime=={onnxruntime.__version__}" in requirements
    archive = weights_archive(model_dir, tmp_path / "model.tar.gz", runtime="onnx")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [SPEC_FILE, ONNX_FILE]
