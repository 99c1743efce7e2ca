"""What bincount adds to uvicorn: a deadline for a request's headers (a slowloris is answered 408
and dropped while others are served). The exit status after SIGTERM is a process matter:
tests/e2e/test_serving_server.py."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import serve_settings, served
from tests.support.serving import SAMPLE_IDS, raw_request, read_response


@pytest.fixture(scope="module")
def url(model_dir: Path) -> Iterator[str]:
    with served(serve_settings(f"model_dir={model_dir}", "serve.torch_threads=1",
                               "serve.timeouts.header_s=0.5")) as url:
        yield url


@pytest.mark.parametrize(
    "head", [b"", b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"],
    ids=["silent", "half-a-header"],
)
def test_a_connection_without_complete_headers_gets_a_408_and_is_closed(
    url: str, jpegs: dict[str, bytes], head: bytes
) -> None:
    port = int(url.rsplit(":", 1)[1])
    start = time.perf_counter()
    sock = raw_request(port, head_only=head) if head else socket.create_connection(
        ("127.0.0.1", port), timeout=30)
    with sock:
        answer = requests.post(f"{url}/invocations", data=jpegs[SAMPLE_IDS[0]],
                               headers={"Content-Type": "image/jpeg"}, timeout=10)
        assert answer.status_code == 200  # others are served meanwhile
        status, headers, body = read_response(sock)
        assert sock.recv(10) == b""  # closed by the server
    assert status == 408 and headers["connection"] == "close"
    assert "no complete request headers in 0.5 s" in json.loads(body)["message"]
    assert time.perf_counter() - start < 3


def test_an_idle_kept_alive_connection_is_not_cut_by_the_header_deadline(
    url: str, jpegs: dict[str, bytes]
) -> None:
    with requests.Session() as session:
        for _ in range(2):  # the second request reuses the connection after > 0.5 s
            answer = session.post(f"{url}/invocations", data=jpegs[SAMPLE_IDS[0]],
                                  headers={"Content-Type": "image/jpeg"}, timeout=10)
            assert answer.status_code == 200
            time.sleep(0.8)
