"""A small asyncio client for the Kubernetes REST API, used by the node agent.

The node agent talks to the API server as `system:node:NAME` with a client certificate, like a
kubelet, so the Node authoriser and the NodeRestriction admission plugin check everything it
does. Objects are plain JSON dictionaries: the agent reads a few fields of many kinds and writes
status patches, for which typed models would only add weight.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

JSON = dict[str, Any]

# Watch events can carry whole pods; allow lines far longer than aiohttp's default buffer.
_READ_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and the files that prove who the client is."""

    server: str
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Credentials:
        """Read the current context of a kubeconfig that refers to certificate files."""
        config = yaml.safe_load(path.read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        return cls(
            server=cluster["server"].rstrip("/"),
            ca=Path(cluster["certificate-authority"]),
            cert=Path(user["client-certificate"]),
            key=Path(user["client-key"]),
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(self.cert, self.key)
        return context


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        try:
            details = json.loads(body)
        except ValueError:
            details = {}
        self.reason = str(details.get("reason", ""))
        message = details.get("message", body[:300])
        super().__init__(f"{method} {path} answered {status}: {message}")


class KubeApi:
    """An API-server session; use as `async with KubeApi(credentials) as api:`."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeApi:
        connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context(), limit=20)
        self._session = aiohttp.ClientSession(
            base_url=self.credentials.server, connector=connector, read_bufsize=_READ_BUFFER
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("KubeApi is used outside `async with`")
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        """Send one request and return the decoded answer; raise ApiError on 4xx and 5xx."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=30)
        async with self.session.request(
            method, path, data=data, params=params, headers=headers, timeout=timeout
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(method, path, response.status, text)
            return json.loads(text) if text else {}

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: JSON) -> JSON:
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, body: JSON) -> JSON:
        return await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        return await self.request("DELETE", path, body=body)

    async def watch(
        self, path: str, params: Mapping[str, str], timeout_seconds: int = 300
    ) -> AsyncIterator[JSON]:
        """Yield the events of one watch request until the server ends it.

        The caller keeps the last resourceVersion and watches again; an `ERROR` event with
        status 410 means the version is too old and the caller must list again.
        """
        query = {**params, "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with self.session.get(path, params=query, timeout=timeout) as response:
            if response.status >= 400:
                raise ApiError("WATCH", path, response.status, await response.text())
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
