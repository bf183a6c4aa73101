"""The `serve` stage: the serving API over HTTP, until SIGTERM.

`lifelong trainer serve --version V [--canary C --canary-weight W] [--host H] [--port P]
[--replay]` serves V (and C for W percent of requests) on `H:P` (default `$POD_IP` or
127.0.0.1, and `spec.serving.port`):

| Method and path | Answer |
| --- | --- |
| `POST /v1/predict` | `{"predictions": [...], "ids": [...], "versions": [...]}` |
| `POST /v1/feedback` | `{"accepted": n}` |
| `GET /v1/status` | versions, online metrics, drift, memories (`ServingState.status`) |
| `POST /v1/save` | `{"saved": true}` once the state is in the store |
| `GET /healthz`, `GET /readyz` | 200 while alive; 200 once the models are loaded |
| `GET /metrics` | Prometheus text |

A refused request gets a 4xx answer `{"error": "...", "reason": "..."}` and counts in
`lifelong_bad_requests_total{endpoint,reason}`. The state is saved every
`$LIFELONG_STATE_INTERVAL` seconds and on SIGTERM, so a restart loses nothing. With `--replay`
the stage feeds itself `spec.data.stream` at `stream.rate` records per second, resuming where a
previous run stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import torch
from aiohttp import web

from lifelong.api import AutoDLJob
from lifelong.api import metrics as m
from lifelong.trainers.data import DataError, stream_records
from lifelong.trainers.exporter import CONTENT_TYPE
from lifelong.trainers.knobs import Settings
from lifelong.trainers.serving import RequestError, ServingState, open_state
from lifelong.trainers.store import Store
from lifelong.trainers.stream import ServeClient, StreamDriver

log = logging.getLogger(__name__)

STATE_KEY = web.AppKey("state", ServingState)
STORE_KEY = web.AppKey("store", Store)
STOP_GRACE_S = 5.0
"""Seconds that in-flight requests, and the replayed stream's feeder, get to finish on SIGTERM."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refuse(state: ServingState, endpoint: str, error: RequestError) -> web.Response:
    state.refused(endpoint, error)
    log.debug("Refused a %s request (%s): %s", endpoint, error.reason, error.message)
    return web.json_response({"error": error.message, "reason": error.reason}, status=error.status)


async def _body(request: web.Request) -> Any:
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        limit = request.app[STATE_KEY].settings.max_body_bytes
        raise RequestError(413, "too-large", f"the body is larger than {limit} bytes") from error
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(400, "bad-json", f"the body is not valid JSON: {error}") from error


def _json_endpoint(endpoint: str, answer: Callable[[ServingState, Any], dict[str, Any]]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        try:
            return web.json_response(answer(state, await _body(request)))
        except RequestError as error:
            return _refuse(state, endpoint, error)
        except Exception as error:
            # A bug, not the client's fault: answer 500 and keep serving.
            log.exception("A %s request failed.", endpoint)
            message = f"internal error: {type(error).__name__}: {error}"
            return web.json_response({"error": message, "reason": "internal"}, status=500)

    return handler


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].status())


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response({"status": "ready", "versions": [s.name for s in state.served]})


async def _save(request: web.Request) -> web.Response:
    """Save the state now, so that an update starting next reads the latest memories."""
    if STORE_KEY not in request.app:
        return web.json_response(
            {"error": "this server has no store", "reason": "no-store"}, status=409
        )
    request.app[STATE_KEY].save(request.app[STORE_KEY])
    return web.json_response({"saved": True})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE_KEY].exporter.text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def make_app(state: ServingState, store: Store | None = None) -> web.Application:
    """The serving API over one state (saved to `store` on `POST /v1/save`)."""
    app = web.Application(client_max_size=state.settings.max_body_bytes)
    app[STATE_KEY] = state
    if store is not None:
        app[STORE_KEY] = store
    app.router.add_post("/v1/predict", _json_endpoint("predict", ServingState.predict))
    app.router.add_post("/v1/feedback", _json_endpoint("feedback", ServingState.feedback))
    app.router.add_get("/v1/status", _status)
    app.router.add_post("/v1/save", _save)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


# --- background work ---------------------------------------------------------------------------


async def _save_periodically(state: ServingState, store: Store, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            state.save(store)
        except Exception:
            log.exception("Saving the serving state failed; trying again in %.0fs.", interval)


def _replay(state: ServingState, job: AutoDLJob, url: str, stop: threading.Event) -> None:
    """Feed the job's stream to this server in real time, from where a last run stopped."""
    try:
        _feed(state, job, url, stop)
    except Exception:
        log.exception(
            "Replaying the stream failed at record %d; serving goes on.", state.stream_position
        )


def _feed(state: ServingState, job: AutoDLJob, url: str, stop: threading.Event) -> None:
    stream = job.spec.data.stream
    if stream is None:
        raise DataError("--replay needs spec.data.stream; the job declares no stream")
    records = stream_records(job.spec.data, job.spec.task)
    for _ in range(state.stream_position):
        next(records, None)
    counter = state.exporter.series(m.STREAM_RECORDS)

    def advance(count: int) -> None:
        state.stream_position += count
        counter.inc(count)

    with ServeClient(url) as client:
        driver = StreamDriver(
            client,
            records,
            label_delay=stream.label_delay,
            rate=stream.rate,
            stop=stop,
            on_batch=advance,
        )
        driver.run()
    if not stop.is_set():
        state.stream_done = True
        log.info("The replayed stream ended after %d records.", state.stream_position)


async def serve(
    state: ServingState,
    store: Store,
    host: str,
    port: int,
    *,
    job: AutoDLJob | None = None,
    replay: bool = False,
) -> None:
    """Serve until SIGTERM or SIGINT, then save the state.

    In-flight requests get `STOP_GRACE_S` to finish, so that stopping (and saving) stays well
    inside a pod's termination grace period even while clients hold connections open.
    """
    runner = web.AppRunner(make_app(state, store), access_log=None, shutdown_timeout=STOP_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("Serving %s on http://%s:%d.", ", ".join(s.name for s in state.served), host, port)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    saver = asyncio.create_task(_save_periodically(state, store, state.settings.state_interval_s))
    halt = threading.Event()
    feeder = None
    if replay and job is not None:
        feeder = asyncio.create_task(
            asyncio.to_thread(_replay, state, job, f"http://{host}:{port}", halt)
        )
    try:
        await stopping.wait()
    finally:
        log.info("Stopping: saving the serving state.")
        halt.set()
        saver.cancel()
        if feeder is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(feeder, timeout=STOP_GRACE_S)
        try:
            await runner.cleanup()
        finally:
            state.save(store)


def run(job: AutoDLJob, store: Store, args: argparse.Namespace) -> None:
    """The stage's entry: load the state, serve until SIGTERM, save the state."""
    settings = Settings.from_env()
    torch.set_num_threads(settings.threads)
    version = getattr(args, "version_name", None)
    if not version:
        raise DataError("the serve stage needs --version, the model version to serve")
    weight = int(getattr(args, "canary_weight", 0) or 0)
    if not 0 <= weight <= 100:
        raise DataError(f"--canary-weight must be a percentage from 0 to 100, got {weight}")
    state = open_state(
        job,
        store,
        version,
        canary=getattr(args, "canary", None),
        canary_weight=weight,
        settings=settings,
    )
    host = getattr(args, "host", None) or settings.host
    port = getattr(args, "port", None) or job.spec.serving.port
    asyncio.run(
        serve(state, store, host, port, job=job, replay=bool(getattr(args, "replay", False)))
    )
