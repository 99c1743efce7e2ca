"""A local S3 for tests, benchmarks and offline tries: moto's server on 127.0.0.1.

``LocalS3`` serves a bucket with a public-read policy (moto refuses unsigned requests without
one, as S3 does), so the download code reaches it exactly as it reaches ``aft-vbi-pds``: an
unsigned client with ``endpoint_url``. ``FaultProxy`` is a real HTTP proxy in front of it that
adds latency or fails chosen keys the first N times (503 SlowDown, or a dropped connection).
Needs the ``dev`` extra (moto[server]); used by the tests and ``scripts/benchmark_download.py``,
never by ``bincount``.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3

from tests.support.net import free_port

FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def public_read_policy(bucket: str) -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PublicRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        }],
    })


class LocalS3:
    """moto's threaded server on a free port of 127.0.0.1 (a context manager)."""

    def __init__(self, region: str = "us-east-1") -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.region = region
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def __enter__(self) -> LocalS3:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def client(self) -> Any:
        """A signed client (fake credentials) to create and fill buckets."""
        return boto3.session.Session().client(
            "s3", endpoint_url=self.url, region_name=self.region, **FAKE_CREDENTIALS
        )

    def public_bucket(self, bucket: str) -> Any:
        client = self.client()
        client.create_bucket(Bucket=bucket)
        client.put_bucket_policy(Bucket=bucket, Policy=public_read_policy(bucket))
        return client


def put_bins(
    client: Any,
    bucket: str,
    source_dir: Path,
    ids: list[str],
    image_prefix: str = "bin-images/",
    metadata_prefix: str = "metadata/",
    rename: dict[str, str] | None = None,
) -> None:
    """Upload ``<source_dir>/images/<id>.jpg`` and ``metadata/<id>.json`` under the ABID keys.

    ``rename`` maps a source id to the id it is stored under (to make more objects from a few).
    """
    rename = rename or {}
    for image_id in ids:
        target = rename.get(image_id, image_id)
        client.put_object(Bucket=bucket, Key=f"{image_prefix}{target}.jpg",
                          Body=(Path(source_dir) / "images" / f"{image_id}.jpg").read_bytes())
        client.put_object(Bucket=bucket, Key=f"{metadata_prefix}{target}.json",
                          Body=(Path(source_dir) / "metadata" / f"{image_id}.json").read_bytes())


@dataclass
class Fault:
    """Fail the first ``times`` requests for a key: an HTTP ``status`` or a dropped connection."""

    times: int
    status: int | None = 503  # None: close the connection without answering


class FaultProxy:
    """A threaded HTTP proxy in front of ``upstream`` that injects latency and faults.

    ``faults`` maps a URL path (``/<bucket>/<key>``, path-style addressing) to a Fault;
    ``hits`` counts the requests seen per path, ``signed`` those that carried credentials.
    """

    def __init__(
        self, upstream: str, faults: dict[str, Fault] | None = None, latency_s: float = 0.0
    ) -> None:
        self.upstream = urlparse(upstream)
        self.faults = dict(faults or {})
        self.latency_s = latency_s
        self.hits: Counter[str] = Counter()
        self.signed = 0  # requests that carried an Authorization header
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm
                # and delayed ACKs add ~40 ms to every response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                path = self.path.split("?", 1)[0]
                with proxy._lock:
                    proxy.hits[path] += 1
                    proxy.signed += "Authorization" in self.headers
                    fault = proxy.faults.get(path)
                    inject = fault is not None and fault.times > 0
                    if inject:
                        fault.times -= 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.latency_s:
                    time.sleep(proxy.latency_s)
                if inject and fault.status is None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if inject:
                    payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown"
                               b"</Code><Message>Reduce your request rate.</Message></Error>")
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port,
                                                  timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    headers["Host"] = proxy.upstream.netloc
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
