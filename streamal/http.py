"""The HTTP endpoints on one port: ``/metrics``, ``/healthz``, ``/readyz``, ``/v1/model`` (aiohttp)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamal.errors import ConfigError


def build_app(
    registry: CollectorRegistry,
    model_info: Callable[[], dict[str, Any]],
    alive: Callable[[], bool],
    ready: Callable[[], bool],
) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = alive()
        return web.json_response({"status": "ok" if ok else "stalled"}, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"status": "ready" if ok else "not ready"}, status=200 if ok else 503)

    async def model(_: web.Request) -> web.Response:
        body = orjson.dumps(model_info(), option=orjson.OPT_NON_STR_KEYS)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/model", model)
    return app


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (``await runner.cleanup()`` stops it) and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"http.host / http.port (STREAMAL_HTTP__HOST, STREAMAL_HTTP__PORT): cannot listen on "
            f"{host}:{port}: {exc.strerror or exc}; is another process using the port?"
        ) from exc
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


# -- the client side, for the demo and the harnesses that watch a running service ----------------------
def fetch_json(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """GET a JSON object from a service endpoint; None while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own endpoints
            data = json.load(response)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def answers_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether a service endpoint answers 200 (``/readyz``, ``/healthz``)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own endpoints
            return bool(response.status == 200)
    except OSError:
        return False
