"""Run ``scripts/serve.py`` as a separate process (for the benchmark and the tests): a real
server on a free 127.0.0.1 port, stopped with SIGTERM as a process manager would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

import bincount

SERVE_SCRIPT = Path(bincount.__file__).resolve().parents[1] / "scripts" / "serve.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
