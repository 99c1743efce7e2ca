"""The local endpoint: the SageMaker inference container contract on FastAPI + uvicorn.

``GET /ping`` answers 200 once the model is loaded; ``POST /invocations`` (and the runtime
path ``POST /endpoints/<name>/invocations``, so boto3's ``sagemaker-runtime`` client works
against it) takes one image and answers the JSON of :mod:`bincount.serving.handlers`, which do
all the decoding, inference and serialization. Bad requests get a 4xx JSON body
``{"error": <reason>, "message": <what was wrong>, "status": <code>}``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from omegaconf import DictConfig
from PIL import Image
from starlette.concurrency import run_in_threadpool

from bincount.serving import handlers
from bincount.serving.batching import MicroBatcher
from bincount.serving.package import check_model_dir
from bincount.serving.settings import ServeSettings

log = logging.getLogger("bincount.serving")


def usable_cpus() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def error_response(status: int, message: str) -> JSONResponse:
    # x-amzn-ErrorType makes boto3 raise its ModelError (as SageMaker does for a container's
    # error) with this message.
    return JSONResponse(
        {"error": HTTPStatus(status).phrase, "message": message, "status": status},
        status_code=status,
        headers={"x-amzn-ErrorType": "ModelError"},
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
    """The ASGI app for ``settings.model_dir``. The handlers read the request limits from the
    environment (as on a SageMaker endpoint), so the settings' limits are exported to this
    process's environment."""
    model_dir = settings.model_dir
    check_model_dir(model_dir)
    os.environ.update(settings.limits.to_env())
    threads = settings.torch_threads or usable_cpus()
    state: dict[str, Any] = {}

    def inference_thread_setup() -> None:
        torch.set_num_threads(threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = await run_in_threadpool(handlers.model_fn, str(model_dir))

        def run_batch(images: Sequence[Image.Image]) -> list[dict[str, Any]]:
            return handlers.predict_fn(images, model)

        batcher: MicroBatcher[Image.Image, dict[str, Any]] = MicroBatcher(
            run_batch,
            max_batch_size=settings.max_batch_size if settings.batching else 1,
            max_wait_s=settings.max_wait_ms / 1000 if settings.batching else 0.0,
            thread_setup=inference_thread_setup,
        )
        batcher.start()
        size = model.spec.image_size
        await batcher.submit(Image.new("RGB", (size, size)))  # warm-up: first request is not slow
        state.update(model=model, batcher=batcher)
        log.info(
            "model %s loaded from %s; batching %s (max %d, wait %.1f ms), %d torch threads",
            model.label, model_dir, "on" if settings.batching else "off",
            batcher.max_batch_size, batcher.max_wait_s * 1000, threads,
        )
        try:
            yield
        finally:
            state.clear()
            await batcher.stop()
            log.info("stopped")

    app = FastAPI(title="bincount endpoint", lifespan=lifespan)

    @app.middleware("http")
    async def log_request(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        log.info(
            "%s %s %d %.1fms", request.method, request.url.path, response.status_code,
            (time.perf_counter() - start) * 1000,
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

    async def invoke(request: Request) -> Response:
        content_type = request.headers.get("content-type")
        accept = request.headers.get("accept") or handlers.JSON
        handlers.check_content_type(content_type)
        handlers.response_type(accept)
        if "batcher" not in state:
            return error_response(503, "the model is not loaded")
        body = await read_body(request, settings.limits.max_request_bytes)
        image = await run_in_threadpool(handlers.input_fn, body, content_type)
        try:
            prediction = await state["batcher"].submit(image)
            payload, media_type = handlers.output_fn([prediction], accept)
        except handlers.BaseInferenceToolkitError:
            raise
        except Exception as err:  # a real server fault: 500, logged, and the server goes on
            log.exception("inference failed")
            return error_response(500, f"internal error: {type(err).__name__}: {err}")
        return Response(payload, media_type=media_type)

    app.add_api_route("/invocations", invoke, methods=["POST"])
    app.add_api_route("/endpoints/{endpoint_name}/invocations", invoke, methods=["POST"])
    return app


def serve(cfg: DictConfig) -> None:
    """Run the local endpoint until SIGINT/SIGTERM; in-flight requests finish first."""
    settings = ServeSettings.from_cfg(cfg)
    torch.set_num_threads(settings.torch_threads or usable_cpus())
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the logging Hydra set up
        log_level=settings.log_level,
        access_log=False,  # one line per request comes from the app, with its latency
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )
    log.info("serving %s on http://%s:%d", settings.model_dir, settings.host, settings.port)
    uvicorn.Server(config).run()
