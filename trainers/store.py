"""The artifact store: a job's files under one fsspec URI, with atomic writes and digests.

Every stage reads and writes through `Store`. Small JSON documents are replaced atomically (a
temporary file, then a move); a model version's files are written first and its `manifest.json`
last, so a version without a manifest, or whose files do not match the manifest's digests, is
incomplete and never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    """The store could not be read or written, or holds an incomplete or corrupt object."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """A directory in the artifact store, addressed by a URI (`file://`, `s3://`, a path)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.uri)
        self.root = str(root).rstrip("/") or "/"

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    @property
    def is_local(self) -> bool:
        return "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )

    def path(self, *parts: str) -> str:
        """The store's own path of a file or folder below the root."""
        return posixpath.join(self.root, *parts)

    def local_path(self, *parts: str) -> Path:
        """A local filesystem path below the root; only for stores on a local disk."""
        if not self.is_local:
            raise StoreError(f"{self.uri} is not on a local disk; {'/'.join(parts)} needs one")
        path = Path(self.path(*parts))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def child(self, *parts: str) -> Store:
        """The store rooted at a folder below this one."""
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        base = self.path(*parts)
        return Store(base if protocol == "file" else f"{protocol}://{base}")

    # --- plain files --------------------------------------------------------------------------

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def names(self, *parts: str) -> list[str]:
        """Names directly below a folder; empty if the folder does not exist."""
        folder = self.path(*parts)
        if not self.fs.exists(folder):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(folder, detail=False))

    def read_bytes(self, *parts: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self.path(*parts))
        except FileNotFoundError as error:
            raise StoreError(f"{self.uri}/{'/'.join(parts)} does not exist") from error
        return data

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Replace a file atomically: readers see the old content or the new, never a part."""
        target = self.path(*parts)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        temporary = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(temporary, "wb") as handle:
            handle.write(data)
        self.fs.mv(temporary, target)

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def write_json(self, value: Any, *parts: str) -> None:
        self.write_bytes(json.dumps(value, indent=2, sort_keys=True).encode(), *parts)

    def append_line(self, value: Any, *parts: str) -> None:
        """Append one JSON line to a log file (read, extend, replace: fine for small logs)."""
        line = json.dumps(value, sort_keys=True) + "\n"
        old = self.read_bytes(*parts) if self.exists(*parts) else b""
        self.write_bytes(old + line.encode(), *parts)

    def read_lines(self, *parts: str) -> list[Any]:
        """Read a JSON-lines log; a line that does not parse is skipped and logged."""
        if not self.exists(*parts):
            return []
        records = []
        for number, line in enumerate(self.read_bytes(*parts).decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("Skipping unreadable line %d of %s.", number, "/".join(parts))
        return records

    # --- model versions -----------------------------------------------------------------------

    def write_version(
        self, name: str, files: Mapping[str, bytes], metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Write a version's files, then its manifest; return the manifest.

        The manifest lists each file's SHA-256 and a version digest over all of them. A crash
        before the manifest is written leaves an incomplete version that `read_version` refuses.
        """
        digests = {file: sha256_hex(data) for file, data in sorted(files.items())}
        for file, data in files.items():
            self.write_bytes(data, "versions", name, file)
        combined = "".join(f"{file}:{digest}\n" for file, digest in sorted(digests.items()))
        manifest = {
            **metadata,
            "name": name,
            "files": digests,
            "digest": "sha256:" + sha256_hex(combined.encode()),
            "written": now_rfc3339(),
        }
        self.write_json(manifest, "versions", name, MANIFEST)
        return manifest

    def version_complete(self, name: str) -> bool:
        return self.exists("versions", name, MANIFEST)

    def read_manifest(self, name: str) -> dict[str, Any]:
        if not self.version_complete(name):
            raise StoreError(f"model version {name} is missing or incomplete in {self.uri}")
        manifest: dict[str, Any] = self.read_json("versions", name, MANIFEST)
        return manifest

    def read_version(self, name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Return a version's manifest and files, after checking every file's digest."""
        manifest = self.read_manifest(name)
        files = {}
        for file, digest in manifest["files"].items():
            data = self.read_bytes("versions", name, file)
            if sha256_hex(data) != digest:
                raise StoreError(
                    f"model version {name}: {file} does not match its digest; the version is "
                    "corrupt and will not be loaded"
                )
            files[file] = data
        return manifest, files

    def versions(self) -> list[str]:
        """Names of the complete versions, oldest first by their number."""
        names = [n for n in self.names("versions") if self.version_complete(n)]
        return sorted(names, key=_version_order)


def _version_order(name: str) -> tuple[int, str]:
    tail = name.rsplit("-v", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)
