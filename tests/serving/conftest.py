"""What the serving unit tests share: one small exported model, the real sample photos, and the
local endpoint's app served on a thread of this process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from bincount.serving.server import create_app
from bincount.serving.settings import ServeSettings
from tests.support.paths import CONF
from tests.support.servers import app_server
from tests.support.serving import MAX_BYTES, SAMPLE_IDS, make_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def jpegs(sample_dir: Path) -> dict[str, bytes]:
    """The sample photos' bytes by image id."""
    return {i: (sample_dir / "images" / f"{i}.jpg").read_bytes() for i in SAMPLE_IDS}


def serve_settings(*overrides: str) -> ServeSettings:
    """The settings ``scripts/serve.py <overrides>`` runs with."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return ServeSettings.from_cfg(compose("serve", overrides=list(overrides)))


@pytest.fixture(scope="module")
def endpoint(model_dir: Path) -> Iterator[str]:
    """The local endpoint's app on a thread (one torch thread, a 1 MB request limit): its URL.
    The environment and torch's thread count, which the app sets, are put back afterwards."""
    settings = serve_settings(
        f"model_dir={model_dir}", "serve.torch_threads=1", f"limits.max_request_bytes={MAX_BYTES}"
    )
    threads = torch.get_num_threads()
    saved = {name: os.environ.get(name) for name in settings.limits.to_env()}
    try:
        with app_server(create_app(settings)) as url:
            yield url
    finally:
        torch.set_num_threads(threads)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
