"""What a container's process sees of its pod: environment variables, `$(VAR)` expansion,
downward-API fields and resource quantities, resolved the way the kubelet resolves them.

The node agent's pod worker calls `container_env` before each start of a container; the
volume code shares `field_value` and `resource_value` for downward-API files.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal

from kubeapi import JSON, ApiError

# Reads one object (a ConfigMap or Secret) by kind and name in the pod's namespace; None when
# it does not exist.
ObjectReader = Callable[[str, str], Awaitable[JSON | None]]


class ConfigMissingError(Exception):
    """A referenced ConfigMap, Secret or key is missing; the kubelet retries until it exists.

    Reported as the container's waiting reason `CreateContainerConfigError`.
    """


class UnsupportedFieldError(Exception):
    """The pod refers to a field this node agent cannot provide; retrying will not help."""


# -- quantities --------------------------------------------------------------------------------

_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(text: str | int | float) -> Decimal:
    """The value of a Kubernetes quantity such as `500m`, `2Gi` or `1e3`."""
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]


def resource_value(
    pod: JSON, container_name: str, resource: str, divisor: str | None, node_allocatable: JSON
) -> str:
    """A `resourceFieldRef` value: the container's limit or request in units of `divisor`.

    Without a limit the kubelet reports the node's allocatable amount; so does this.
    """
    kind, _, name = resource.partition(".")
    container = next(
        (c for c in pod["spec"].get("containers", []) if c["name"] == container_name), None
    )
    if container is None or kind not in ("limits", "requests"):
        raise UnsupportedFieldError(f"resourceFieldRef {resource} of container {container_name!r}")
    amounts = container.get("resources", {}).get(kind, {})
    value = amounts.get(name)
    if value is None:
        value = node_allocatable.get(name, 0) if kind == "limits" else 0
    result = parse_quantity(value) / parse_quantity(divisor or "1")
    return str(math.ceil(result))


# -- fields ------------------------------------------------------------------------------------

_MAP_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _format_map(values: Mapping[str, str]) -> str:
    return "\n".join(f'{key}="{value}"' for key, value in sorted(values.items()))


def field_value(pod: JSON, path: str) -> str:
    """A `fieldRef` value of the pod, e.g. `metadata.name` or `status.podIP`."""
    metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIPs": ",".join(ip["ip"] for ip in status.get("hostIPs", [])),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs", [])),
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        return _format_map(metadata.get(path.split(".")[1], {}))
    match = _MAP_FIELD.match(path)
    if match:
        return str(metadata.get(match.group(1), {}).get(match.group(2), ""))
    raise UnsupportedFieldError(f"fieldRef {path} is not supported")


# -- expansion ---------------------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand `$(VAR)` from `env` as the kubelet does: `$$` is a literal `$`, and a reference
    to an undefined variable is left as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if char != "$" or nxt not in ("$", "("):
            out.append(char)
            i += 1
        elif nxt == "$":
            out.append("$")
            i += 2
        else:
            end = text.find(")", i + 2)
            name = text[i + 2 : end] if end != -1 else ""
            if end == -1 or not name:
                out.append(text[i : i + 2])
                i += 2
            else:
                out.append(env.get(name, text[i : end + 1]))
                i = end + 1
    return "".join(out)


# -- environment -------------------------------------------------------------------------------


def decode_secret(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}


async def _object_data(read: ObjectReader, kind: str, name: str, optional: bool) -> dict[str, str]:
    obj = await read(kind, name)
    if obj is None:
        if optional:
            return {}
        raise ConfigMissingError(f'{kind.lower()} "{name}" not found')
    data = obj.get("data") or {}
    return decode_secret(data) if kind == "Secret" else dict(data)


async def _key_ref(read: ObjectReader, kind: str, ref: JSON) -> str | None:
    optional = bool(ref.get("optional", False))
    data = await _object_data(read, kind, ref["name"], optional)
    if ref["key"] not in data:
        if optional:
            return None
        raise ConfigMissingError(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
    return data[ref["key"]]


async def _value_from(
    source: JSON, pod: JSON, container: JSON, read: ObjectReader, allocatable: JSON
) -> str | None:
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        ref = source["resourceFieldRef"]
        name = ref.get("containerName") or container["name"]
        return resource_value(pod, name, ref["resource"], ref.get("divisor"), allocatable)
    if "configMapKeyRef" in source:
        return await _key_ref(read, "ConfigMap", source["configMapKeyRef"])
    if "secretKeyRef" in source:
        return await _key_ref(read, "Secret", source["secretKeyRef"])
    raise UnsupportedFieldError(f"env valueFrom {sorted(source)} is not supported")


async def container_env(
    pod: JSON,
    container: JSON,
    base: Mapping[str, str],
    read: ObjectReader,
    allocatable: JSON,
) -> dict[str, str]:
    """The process environment: `base`, then `envFrom`, then `env`, in the kubelet's order.

    Raises ConfigMissingError when a referenced ConfigMap, Secret or key does not exist yet.
    """
    env = dict(base)
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, kind = source["configMapRef"], "ConfigMap"
        else:
            ref, kind = source["secretRef"], "Secret"
        data = await _object_data(read, kind, ref["name"], bool(ref.get("optional")))
        env.update({prefix + key: value for key, value in data.items()})
    for variable in container.get("env", []):
        if "valueFrom" in variable:
            value = await _value_from(variable["valueFrom"], pod, container, read, allocatable)
            if value is not None:
                env[variable["name"]] = value
        else:
            env[variable["name"]] = expand(variable.get("value", ""), env)
    return env


def object_reader(get: Callable[[str], Awaitable[JSON]], namespace: str) -> ObjectReader:
    """An ObjectReader over the API: `get(path)` for ConfigMaps and Secrets in `namespace`."""
    plural = {"ConfigMap": "configmaps", "Secret": "secrets"}

    async def read(kind: str, name: str) -> JSON | None:
        try:
            return await get(f"/api/v1/namespaces/{namespace}/{plural[kind]}/{name}")
        except ApiError as error:
            # The node authoriser answers 403 for an object no pod on this node refers to yet:
            # for a just-created reference that is the same as "not there yet".
            if error.status in (403, 404):
                return None
            raise

    return read


def extended_resource_count(pod: JSON, resource: str) -> int:
    """How many units of an extended resource (e.g. `nvidia.com/gpu`) the pod's containers
    ask for. Extended resources are set as limits; requests, if given, must equal them."""
    total = 0
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources", {})
        amount = resources.get("limits", {}).get(
            resource, resources.get("requests", {}).get(resource, 0)
        )
        total += int(parse_quantity(amount))
    return total
