"""Model families that the search builds from a configuration: MLPs and small CNNs.

A configuration is a plain dict (it is recorded with every model version). Every network ends
in a linear `head`, so an update can grow the output when new classes appear.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class Network(nn.Module):
    """A feature extractor (`body`) followed by a linear `head`."""

    def __init__(self, body: nn.Module, features: int, outputs: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(features, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


def _norm(kind: str, width: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm1d(width)]
    if kind == "layer":
        return [nn.LayerNorm(width)]
    return []


def _mlp_body(config: dict[str, Any], inputs: int) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    width = int(config["width"])
    previous = inputs
    for _ in range(int(config["depth"])):
        layers.append(nn.Linear(previous, width))
        layers += _norm(str(config.get("normalization", "none")), width)
        layers.append(ACTIVATIONS[str(config.get("activation", "relu"))]())
        if float(config.get("dropout", 0.0)) > 0:
            layers.append(nn.Dropout(float(config["dropout"])))
        previous = width
    return nn.Sequential(*layers), previous


class _Stage(nn.Module):
    """Two convolutions with an optional residual connection, then optional pooling."""

    def __init__(self, cin: int, cout: int, kernel: int, pooling: str, skip: bool) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(cin, cout, kernel, padding=pad)
        self.conv2 = nn.Conv2d(cout, cout, kernel, padding=pad)
        self.norm = nn.BatchNorm2d(cout)
        self.project = nn.Conv2d(cin, cout, 1) if skip and cin != cout else None
        self.skip = skip
        self.pool: nn.Module = {
            "max": nn.MaxPool2d(2),
            "avg": nn.AvgPool2d(2),
        }.get(pooling, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm(self.conv2(torch.relu(self.conv1(x)))))
        if self.skip:
            out = out + (self.project(x) if self.project is not None else x)
        pooled: torch.Tensor = self.pool(out)
        return pooled


class _Image(nn.Module):
    """Reshape flat rows into images of a fixed shape."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


def _cnn_body(config: dict[str, Any], image_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    channels, height, width = image_shape
    layers: list[nn.Module] = [_Image(image_shape)]
    cin, cout = channels, int(config["channels"])
    for _ in range(int(config["stages"])):
        pooling = str(config.get("pooling", "max"))
        if min(height, width) < 2:
            pooling = "none"  # the image is already a single pixel wide
        layers.append(
            _Stage(
                cin,
                cout,
                int(config.get("kernel_size", 3)),
                pooling,
                bool(config.get("skip", False)),
            )
        )
        if pooling != "none":
            height, width = height // 2, width // 2
        cin, cout = cout, cout * 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


def build_model(
    config: dict[str, Any],
    inputs: int,
    outputs: int,
    image_shape: tuple[int, int, int] | None = None,
) -> Network:
    """Build the network a configuration describes.

    `config["family"]` is `mlp` or `cnn`; a `cnn` needs `image_shape` (channels, height, width)
    whose product equals `inputs`.
    """
    family = config.get("family", "mlp")
    if family == "cnn":
        if image_shape is None or image_shape[0] * image_shape[1] * image_shape[2] != inputs:
            raise ValueError(
                f"the cnn family needs image-shaped inputs; this data has {inputs} features "
                f"and image shape {image_shape}. Use `families: [mlp]` for tabular data."
            )
        body, features = _cnn_body(config, image_shape)
    elif family == "mlp":
        body, features = _mlp_body(config, inputs)
    else:
        raise ValueError(f"unknown model family {family!r}; use mlp or cnn")
    return Network(body, features, outputs)


def expand_head(model: Network, outputs: int) -> None:
    """Grow the output layer to `outputs` units, keeping the weights of the existing ones."""
    old = model.head
    if outputs <= old.out_features:
        return
    new = nn.Linear(old.in_features, outputs)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        new.bias[: old.out_features] = old.bias
        # New classes start unlikely, so they do not disturb predictions before training.
        new.bias[old.out_features :] = old.bias.min() - 1.0
    model.head = new


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
