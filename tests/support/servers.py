"""Local endpoints for the tests and the serving benchmark: ``scripts/serve.py`` as its own
process on a free 127.0.0.1 port (stopped with SIGTERM, as a process manager would), or the
app of :mod:`bincount.serving.server` on a thread of this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import requests
import torch
import uvicorn
from fastapi import FastAPI
from hydra import compose, initialize_config_dir

from bincount.serving.server import create_app, server_config
from bincount.serving.settings import ServeSettings
from tests.support.net import free_port
from tests.support.paths import CONF, SCRIPTS

SERVE_SCRIPT = SCRIPTS / "serve.py"


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit code (killed after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {server.process.returncode}:\n{server.log()[-4000:]}"
            )
        try:
            if requests.get(f"{server.url}/ping", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer /ping in {timeout} s:\n{server.log()[-4000:]}")


@contextmanager
def running_server(
    model_dir: Path,
    log_dir: Path,
    overrides: Sequence[str] = (),
    port: int | None = None,
    timeout: float = 120,
) -> Iterator[ServerProcess]:
    """``scripts/serve.py model_dir=... serve.port=... <overrides>``, ready when it yields."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"serve-{port}.log"
    command = [
        sys.executable, str(SERVE_SCRIPT), f"model_dir={model_dir}", f"serve.port={port}",
        f"paths.log_dir={log_dir}", *overrides,
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ}
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_ready(server, timeout)
        yield server
    finally:
        server.stop()


@contextmanager
def app_server(
    app: FastAPI, settings: ServeSettings | None = None, timeout: float = 120
) -> Iterator[str]:
    """``app`` served by uvicorn on a thread of this process (its lifespan, so the model,
    loaded), with the uvicorn settings ``scripts/serve.py`` derives from ``settings`` (header
    deadline, keep-alive) when given: yields its URL once it answers, stops it when the block
    ends."""
    port = free_port()
    if settings is None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                access_log=False)
    else:
        config = server_config(app, replace(settings, host="127.0.0.1", port=port))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-endpoint", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the endpoint stopped while starting (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the endpoint did not start in {timeout} s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def serve_settings(*overrides: str) -> ServeSettings:
    """The settings ``scripts/serve.py <overrides>`` runs with."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return ServeSettings.from_cfg(compose("serve", overrides=list(overrides)))


@contextmanager
def served(settings: ServeSettings) -> Iterator[str]:
    """The local endpoint's app for ``settings`` on a thread: its URL. The environment and
    torch's thread count, which the app sets, are put back afterwards."""
    threads = torch.get_num_threads()
    saved = {name: os.environ.get(name) for name in settings.limits.to_env()}
    try:
        with app_server(create_app(settings), settings) as url:
            yield url
    finally:
        torch.set_num_threads(threads)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
