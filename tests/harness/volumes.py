"""A pod's volumes, made into folders on this machine for the node agent to bind-mount.

Supported: `configMap`, `secret`, `emptyDir`, `downwardAPI`, `projected` (ConfigMaps, Secrets,
downward API and service-account tokens from the TokenRequest API), `hostPath`, and a
`persistentVolumeClaim` bound to a `hostPath` or `local` PersistentVolume. Contents are written
once, when the pod starts: unlike the kubelet, the agent does not refresh ConfigMaps, Secrets
or tokens afterwards.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from kubeapi import JSON, ApiError, KubeApi
from podenv import ConfigMissingError, UnsupportedFieldError, field_value, resource_value

# A volume's files: relative path -> (content, file mode or None for the volume's default).
Files = dict[str, tuple[bytes, int | None]]

# The kubelet's default file mode for ConfigMap, Secret, downward-API and projected files.
DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """A volume this agent can never provide (an unsupported type); the pod cannot start."""


@dataclass
class VolumeContext:
    """What volume materialisation needs from the agent."""

    api: KubeApi
    pod: JSON
    directory: Path
    allocatable: JSON

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])


async def materialise(context: VolumeContext) -> dict[str, Path]:
    """Make every volume of the pod; return its host path by volume name.

    Raises ConfigMissingError while a referenced object is missing (the caller retries) and
    VolumeError for a volume that can never work here.
    """
    paths = {}
    for volume in context.pod["spec"].get("volumes", []):
        paths[volume["name"]] = await _materialise_one(context, volume)
    return paths


async def _materialise_one(context: VolumeContext, volume: JSON) -> Path:
    name: str = volume["name"]
    target = context.directory / name
    try:
        if "hostPath" in volume:
            return _host_path(volume["hostPath"])
        if "persistentVolumeClaim" in volume:
            return await _claim(context, volume["persistentVolumeClaim"])
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return target
        files = await _files(context, volume)
    except UnsupportedFieldError as error:
        raise VolumeError(f"volume {name!r}: {error}") from error
    _write_files(target, files, _default_mode(volume))
    return target


def _default_mode(volume: JSON) -> int:
    for kind in ("configMap", "secret", "downwardAPI", "projected"):
        if kind in volume:
            return int(volume[kind].get("defaultMode", DEFAULT_MODE))
    return DEFAULT_MODE


async def _files(context: VolumeContext, volume: JSON) -> Files:
    """The files of a ConfigMap, Secret, downward-API or projected volume: path -> (data, mode)."""
    if "configMap" in volume:
        return await _object_files(context, "ConfigMap", volume["configMap"])
    if "secret" in volume:
        source = dict(volume["secret"], name=volume["secret"]["secretName"])
        return await _object_files(context, "Secret", source)
    if "downwardAPI" in volume:
        return _downward_files(context, volume["downwardAPI"]["items"])
    if "projected" in volume:
        files: Files = {}
        for source in volume["projected"].get("sources", []):
            files.update(await _projected_files(context, source))
        return files
    kinds = sorted(set(volume) - {"name"})
    raise VolumeError(
        f"volume {volume['name']!r} of type {kinds} is not supported by the test node agent"
    )


async def _projected_files(context: VolumeContext, source: JSON) -> Files:
    if "configMap" in source:
        return await _object_files(context, "ConfigMap", source["configMap"])
    if "secret" in source:
        return await _object_files(context, "Secret", source["secret"])
    if "downwardAPI" in source:
        return _downward_files(context, source["downwardAPI"].get("items", []))
    if "serviceAccountToken" in source:
        token_source = source["serviceAccountToken"]
        token = await request_token(context, token_source)
        return {token_source["path"]: (token.encode(), None)}
    raise UnsupportedFieldError(f"projected source {sorted(source)} is not supported")


async def _object_files(context: VolumeContext, kind: str, source: JSON) -> Files:
    """Files from a ConfigMap's or Secret's keys, all of them or the listed `items`."""
    plural = "configmaps" if kind == "ConfigMap" else "secrets"
    path = f"/api/v1/namespaces/{context.namespace}/{plural}/{source['name']}"
    optional = bool(source.get("optional", False))
    try:
        obj = await context.api.get(path)
    except ApiError as error:
        if error.status not in (403, 404):
            raise
        if optional:
            return {}
        raise ConfigMissingError(f'{kind.lower()} "{source["name"]}" not found') from error

    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    if kind == "Secret":
        data = {k: base64.b64decode(v) for k, v in data.items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    items = source.get("items")
    if not items:
        return {key: (value, None) for key, value in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise ConfigMissingError(f"couldn't find key {item['key']} in {kind} {source['name']}")
        files[item["path"]] = (data[item["key"]], item.get("mode"))
    return files


def _downward_files(context: VolumeContext, items: list[JSON]) -> Files:
    files = {}
    for item in items:
        if "fieldRef" in item:
            value = field_value(context.pod, item["fieldRef"]["fieldPath"])
        else:
            ref = item["resourceFieldRef"]
            value = resource_value(
                context.pod,
                ref.get("containerName", ""),
                ref["resource"],
                ref.get("divisor"),
                context.allocatable,
            )
        files[item["path"]] = (value.encode(), item.get("mode"))
    return files


async def request_token(context: VolumeContext, source: JSON) -> str:
    """A service-account token bound to the pod, from the TokenRequest API, as a kubelet
    asks for it (the NodeRestriction plugin only allows tokens bound to this node's pods)."""
    metadata = context.pod["metadata"]
    account = context.pod["spec"].get("serviceAccountName") or "default"
    audience = source.get("audience")
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [audience] if audience else [],
            "expirationSeconds": int(source.get("expirationSeconds", 3600)),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "uid": metadata["uid"],
            },
        },
    }
    path = f"/api/v1/namespaces/{context.namespace}/serviceaccounts/{account}/token"
    try:
        answer = await context.api.create(path, request)
    except ApiError as error:
        raise ConfigMissingError(
            f"cannot get a token for service account {account}: {error}"
        ) from error
    return str(answer["status"]["token"])


def _write_files(directory: Path, files: Files, mode: int) -> None:
    for relative, (data, file_mode) in files.items():
        path = directory / relative
        if not path.resolve().is_relative_to(directory.resolve()):
            raise VolumeError(f"volume file path {relative!r} leaves the volume")
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(data)
        temporary.chmod(file_mode if file_mode is not None else mode)
        os.replace(temporary, path)


def _host_path(source: JSON) -> Path:
    path = Path(source["path"])
    kind = source.get("type", "")
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    elif kind in ("Directory", "File") and not path.exists():
        raise ConfigMissingError(f"hostPath {path} does not exist (type {kind})")
    return path


async def _claim(context: VolumeContext, source: JSON) -> Path:
    """The folder behind a PersistentVolumeClaim, once bound to a hostPath or local volume."""
    name = source["claimName"]
    claim = await context.api.get(
        f"/api/v1/namespaces/{context.namespace}/persistentvolumeclaims/{name}"
    )
    volume_name = claim.get("spec", {}).get("volumeName")
    if claim.get("status", {}).get("phase") != "Bound" or not volume_name:
        raise ConfigMissingError(f"persistentvolumeclaim {name!r} is not bound yet")
    volume = await context.api.get(f"/api/v1/persistentvolumes/{volume_name}")
    spec = volume["spec"]
    if "hostPath" in spec:
        return _host_path(spec["hostPath"])
    if "local" in spec:
        return Path(spec["local"]["path"])
    raise VolumeError(
        f"persistentvolume {volume_name!r} is neither hostPath nor local; the test node agent "
        "can only mount those"
    )
