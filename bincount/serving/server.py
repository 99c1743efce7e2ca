"""The local endpoint: the SageMaker inference container contract on FastAPI + uvicorn.

``GET /ping`` answers 200 once the model is loaded; ``POST /invocations`` (and the runtime
path ``POST /endpoints/<name>/invocations``, so boto3's ``sagemaker-runtime`` client works
against it) takes one image (or JSON with a base64 image and an expected count; the count may
also come in ``X-Amzn-SageMaker-Custom-Attributes``, handed to the handlers as the toolkit hands
its context) and answers the JSON of :mod:`bincount.serving.handlers`, which do all the
decoding, inference and serialization. Bad requests get a 4xx JSON body
``{"error": <reason>, "message": <what was wrong>, "status": <code>}``.

One request cannot hold the others hostage: at most ``serve.queue.max_requests`` are admitted
at once (one more gets 503 with ``Retry-After``), images are decoded on
``serve.queue.decode_threads`` threads, the body must arrive within ``serve.timeouts.body_s``
(408) and a request still waiting ``serve.timeouts.request_s`` after its headers is answered 503
with ``Retry-After`` and costs no more work. A client that hangs up is logged as one 499 line.

``GET /metrics`` (``serve.metrics``) exposes Prometheus metrics (:mod:`.metrics`); with
``serve.capture.enabled`` a sample of the answered requests is written, off the request path, in
SageMaker's data capture layout (:mod:`.capture`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from omegaconf import DictConfig
from PIL import Image
from starlette.requests import ClientDisconnect

from bincount.errors import BincountError
from bincount.serving import handlers
from bincount.serving.batching import MicroBatcher
from bincount.serving.capture import CaptureWriter
from bincount.serving.http import DrainingServer, header_timeout_protocol
from bincount.serving.metrics import CONTENT_TYPE, Metrics, route_of
from bincount.serving.package import check_model_dir
from bincount.serving.runtimes import (
    AUTO,
    choose_runtime,
    set_threads,
    usable_cpus,
)
from bincount.serving.settings import ServeSettings

log = logging.getLogger("bincount.serving")
__all__ = ["create_app", "serve", "usable_cpus"]


CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never sent


class DrainError(BincountError):
    """SIGTERM's graceful timeout cut requests off: the drain was not clean."""

    exit_code = 1


def error_response(status: int, message: str, retry_after_s: int | None = None) -> JSONResponse:
    # x-amzn-ErrorType makes boto3 raise its ModelError (as SageMaker does for a container's
    # error) with this message.
    headers = {"x-amzn-ErrorType": "ModelError"}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(
        {"error": HTTPStatus(status).phrase, "message": message, "status": status},
        status_code=status,
        headers=headers,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        handlers.check_size(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        handlers.check_size(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: ServeSettings) -> FastAPI:
    """The ASGI app for ``settings.model_dir``, whose model is loaded here (a bad one stops the
    caller with a one-line :class:`~bincount.data.abid.DataError`). The handlers read the request
    limits from the environment (as on a SageMaker endpoint), so the settings' limits are
    exported to this process's environment; the runtime chosen from ``serve.runtime`` is passed
    to the handlers' loader. ``app.state.cut_off`` counts the requests a shutdown cancelled."""
    model_dir = settings.model_dir
    check_model_dir(model_dir)
    threads = settings.torch_threads or usable_cpus()
    runtime = choose_runtime(model_dir, settings.runtime)  # refused here, naming serve.runtime
    os.environ.update(settings.limits.to_env())
    model = handlers.load_served_model(model_dir, runtime, threads, settings.tta)
    why = " (auto: the fastest that passed its check)" if settings.runtime == AUTO else ""
    state: dict[str, Any] = {}
    admitted = 0  # requests between admission and answer
    metrics = Metrics(model.label, model.runtime.name, model.spec.counts) \
        if settings.metrics else None
    capture = None if settings.capture_dir is None else CaptureWriter(
        settings.capture_dir, settings.capture_sampling, settings.capture_max_queue)
    if metrics is not None and capture is not None:
        metrics.watch_capture(capture)

    def inference_thread_setup() -> None:  # one pool runs the net (see serving.runtimes)
        set_threads(model.runtime.name, threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def run_batch(requests: Sequence[handlers.Request]) -> list[dict[str, Any]]:
            results = handlers.predict_fn(requests, model)
            if metrics is not None and "model" in state:  # not the warm-up
                metrics.observe_batch(results)
            return results

        batcher: MicroBatcher[handlers.Request, dict[str, Any]] = MicroBatcher(
            run_batch,
            max_batch_size=settings.max_batch_size if settings.batching else 1,
            max_wait_s=settings.max_wait_ms / 1000 if settings.batching else 0.0,
            thread_setup=inference_thread_setup,
        )
        batcher.start()
        decoder = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        size = model.spec.image_size
        # warm-up: the first request is not slow
        await batcher.submit(handlers.Request(Image.new("RGB", (size, size))))
        state.update(model=model, batcher=batcher, decoder=decoder)
        if capture is not None:
            capture.start()
            log.info("data capture on: %.0f%% of requests to %s", 100 * capture.sampling,
                     capture.root)
        log.info(
            "model %s loaded from %s; runtime %s%s, %d threads, tta %s; batching %s (max %d, "
            "wait up to %.1f ms for requests on their way)",
            model.label, model_dir, model.runtime.name, why, threads, settings.tta,
            "on" if settings.batching else "off", batcher.max_batch_size,
            batcher.max_wait_s * 1000,
        )
        try:
            yield
        finally:
            state.clear()
            await batcher.stop()
            decoder.shutdown(wait=True, cancel_futures=True)
            if capture is not None:
                capture.stop()
            log.info("stopped")

    docs = settings.docs
    app = FastAPI(
        title="bincount endpoint", lifespan=lifespan, docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None,
    )
    app.state.cut_off = 0

    @app.middleware("http")
    async def log_request(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        if metrics is not None:
            metrics.observe_request(route_of(request.scope), response.status_code,
                                    time.perf_counter() - start)
        note = getattr(request.state, "note", "")
        log.info(
            "%s %s %d %.1fms%s", request.method, request.url.path, response.status_code,
            (time.perf_counter() - start) * 1000, f" {note}" if note else "",
        )
        return response

    @app.exception_handler(handlers.BaseInferenceToolkitError)
    async def bad_request(request: Request, err: handlers.BaseInferenceToolkitError) -> Response:
        return error_response(err.status_code, err.message)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, err: Exception) -> Response:  # the last resort
        log.exception("server fault on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(err).__name__}: {err}")

    @app.get("/ping")
    async def ping() -> Response:
        if "model" not in state:
            return error_response(503, "the model is not loaded")
        return JSONResponse({"status": "ok", "model": state["model"].label})

    if metrics is not None:
        @app.get("/metrics")
        async def scrape() -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE)

    def busy(message: str) -> Response:
        return error_response(503, message, retry_after_s=settings.retry_after_s)

    async def invoke(request: Request) -> Response:
        nonlocal admitted
        content_type = request.headers.get("content-type")
        accept = request.headers.get("accept") or handlers.JSON
        handlers.check_content_type(content_type)
        handlers.response_type(accept)
        if "batcher" not in state:
            return error_response(503, "the model is not loaded")
        if admitted >= settings.max_requests:
            return busy(f"the server is busy ({settings.max_requests} requests in progress): "
                        f"retry in {settings.retry_after_s} s")
        admitted += 1
        try:
            return await answer(request, content_type, accept)
        except ClientDisconnect:
            request.state.note = "client closed the connection before its request was read"
            return Response(status_code=CLIENT_CLOSED)
        except asyncio.CancelledError:  # the graceful shutdown timed out on this request
            app.state.cut_off += 1
            raise
        finally:
            admitted -= 1

    async def answer(request: Request, content_type: str | None, accept: str) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.request_timeout_s
        body_s = min(settings.body_timeout_s, settings.request_timeout_s)
        try:
            body = await asyncio.wait_for(
                read_body(request, settings.limits.max_request_bytes), body_s)
        except TimeoutError:
            return error_response(408, f"the request body did not arrive within {body_s:g} s")
        batcher = state["batcher"]
        context = handlers.RequestContext.of(request.headers)  # as the toolkit hands it over
        try:
            with batcher.arriving():  # a batch being collected may wait for this image
                decoded = await asyncio.wait_for(
                    loop.run_in_executor(state["decoder"], handlers.input_fn, body, content_type,
                                         context),
                    deadline - loop.time(),
                )
                handlers.check_expected(decoded, model)  # a 400 here, not a failed batch
                queued = batcher.enqueue(decoded)
            prediction = await asyncio.wait_for(queued, deadline - loop.time())
            payload, media_type = handlers.output_fn([prediction], accept)
        except TimeoutError:
            return busy(f"the request was not answered within {settings.request_timeout_s:g} s "
                        f"(the server is busy): retry in {settings.retry_after_s} s")
        except handlers.BaseInferenceToolkitError:
            raise
        except Exception as err:  # a real server fault: 500, logged, and the server goes on
            log.exception("inference failed")
            return error_response(500, f"internal error: {type(err).__name__}: {err}")
        if capture is not None:
            capture.offer(body, content_type or "", payload, media_type,
                          custom_attributes=handlers.custom_attributes(context))
        return Response(payload, media_type=media_type)

    app.add_api_route("/invocations", invoke, methods=["POST"])
    app.add_api_route("/endpoints/{endpoint_name}/invocations", invoke, methods=["POST"])
    return app


def server_config(app: FastAPI, settings: ServeSettings) -> uvicorn.Config:
    """uvicorn's settings for ``app``: the header deadline, keep-alive and graceful timeout."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=header_timeout_protocol(settings.header_timeout_s),
        log_config=None,  # keep the logging Hydra set up
        log_level=settings.log_level,
        access_log=False,  # one line per request comes from the app, with its latency
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )


def serve(cfg: DictConfig) -> None:
    """Run the local endpoint until SIGINT/SIGTERM; in-flight requests finish first, then the
    process exits 0 (1 if the graceful timeout cut requests off or the server did not start)."""
    settings = ServeSettings.from_cfg(cfg)
    app = create_app(settings)
    server = DrainingServer(server_config(app, settings))
    log.info("serving %s on http://%s:%d", settings.model_dir, settings.host, settings.port)
    server.run()
    if not server.started:
        raise DrainError("the server did not start (see the log above)")
    if app.state.cut_off:
        raise DrainError(f"{app.state.cut_off} requests were cut off: they were not answered "
                         f"within serve.graceful_shutdown_s={settings.graceful_shutdown_s:g}")
