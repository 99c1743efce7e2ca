"""The source bundle a job runs: the package, conf/ and the entry script of the checkout, and
the container's requirements; never tests, benchmarks or anything only tests import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import DictConfig
from packaging.requirements import Requirement

from bincount.errors import BincountError
from bincount.launchers.bundle import container_requirements, source_root, stage_bundle
from tests.support.aws import with_settings
from tests.support.paths import ROOT


def test_staging_takes_the_package_configs_and_the_entry_script_only(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    for rel in ("bincount/__init__.py", "bincount/__pycache__/x.cpython-311.pyc",
                "bincount/.ipynb_checkpoints/y.py", "bincount/data/file_list.json",
                "bincount/notes.md", "conf/train.yaml", "conf/.train.yaml.swp",
                "scripts/train.py", "scripts/benchmark_serving.py", "scripts/out.log",
                "tests/test_x.py", "tests/support/local_s3.py", ".venv/lib/site.py",
                "data/abid/file_list.json", "outputs/train/metrics.json", "README.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")

    bundle = stage_bundle(tmp_path / "bundle", ["pytorch-lightning>=2.4"], root)

    assert bundle.files == ("bincount/__init__.py", "bincount/data/file_list.json",
                            "conf/train.yaml", "requirements.txt", "scripts/train.py")
    assert sorted(str(p.relative_to(bundle.root)) for p in bundle.root.rglob("*")
                  if p.is_file()) == list(bundle.files)
    assert (bundle.root / "requirements.txt").read_text() == "pytorch-lightning>=2.4\n"
    assert "(bincount/, conf/, scripts/train.py, requirements.txt)" in bundle.describe()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_the_checkouts_bundle_holds_no_test_or_benchmark_code(tmp_path: Path) -> None:
    bundle = stage_bundle(tmp_path / "bundle", [], ROOT)

    assert "scripts/train.py" in bundle.files and "conf/train.yaml" in bundle.files
    assert not [f for f in bundle.files if f.startswith(("tests/", "scripts/benchmark_"))]
    modules = [f for f in bundle.files if f.endswith(".py")]
    assert not [f for f in modules if "benchmark" in Path(f).name]
    assert not [f for f in modules if any(i.split(".")[0] in ("moto", "tests")
                                          for i in _imports(bundle.root / f))]


def test_the_container_installs_the_runtime_requirements_the_image_lacks(
    job_cfg: DictConfig,
) -> None:
    names = {Requirement(r).name.lower() for r in
             container_requirements(job_cfg.launcher.requirements_exclude)}
    assert {"pytorch-lightning", "hydra-core", "omegaconf", "torchmetrics"} <= names
    assert not names & {"torch", "torchvision", "sagemaker", "pytest", "moto"}


def test_the_source_is_a_checkout(job_cfg: DictConfig, tmp_path: Path) -> None:
    assert source_root(job_cfg) == ROOT  # paths.root_dir, outside a Hydra app
    (tmp_path / "conf").mkdir()
    with pytest.raises(BincountError, match=r"has no bincount/, scripts/train.py: run "):
        source_root(with_settings(job_cfg, f"paths.root_dir={tmp_path}"))
