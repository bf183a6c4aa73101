"""The one part of the kubelet API the node agent serves: container logs, so that
`kubectl logs` (through the API server) works for pods on the test node.

The API server dials the node's InternalIP (127.0.0.1) on the port the agent reports in the
Node's `status.daemonEndpoints`, over TLS, with its kubelet client certificate. This server
accepts only clients with a certificate from the cluster's CA, and answers
`GET /containerLogs/NAMESPACE/POD/CONTAINER` with `follow`, `previous`, `tailLines` and
`limitBytes`. Exec, attach, port-forward and metrics are not served.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)

FOLLOW_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class LogSource:
    """Where a container's log is, and whether the container may still write to it."""

    path: Path
    growing: Callable[[], bool]


# Finds the log of (namespace, pod, container, previous), or explains why there is none.
LogFinder = Callable[[str, str, str, bool], LogSource | str]


def _tail(data: bytes, lines: int | None, limit: int | None) -> bytes:
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
    if limit is not None:
        data = data[:limit]
    return data


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


class LogServer:
    """An HTTPS server on 127.0.0.1 that streams container logs found by `find`."""

    def __init__(self, find: LogFinder, cert: Path, key: Path, client_ca: Path) -> None:
        self.find = find
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
        self.tls.load_cert_chain(cert, key)
        self.tls.verify_mode = ssl.CERT_REQUIRED
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen on a free loopback port and return it."""
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        self.port = int(listener.getsockname()[1])
        await web.SockSite(self._runner, listener, ssl_context=self.tls).start()
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        info, query = request.match_info, request.query
        try:
            lines, limit = _int(query.get("tailLines")), _int(query.get("limitBytes"))
        except ValueError:
            return web.Response(status=400, text="tailLines and limitBytes must be integers\n")
        found = self.find(
            info["namespace"], info["pod"], info["container"], query.get("previous") == "true"
        )
        if isinstance(found, str):
            return web.Response(status=404, text=found + "\n")

        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        with found.path.open("rb") as log:
            await response.write(_tail(log.read(), lines, limit))
            while query.get("follow") == "true" and limit is None:
                growing = found.growing()
                chunk = log.read()
                if chunk:
                    await response.write(chunk)
                elif not growing:
                    break
                else:
                    await asyncio.sleep(FOLLOW_POLL_SECONDS)
        await response.write_eof()
        return response
