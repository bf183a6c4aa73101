"""Every exported metric is documented, with its kind and labels, where users look for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifelong.api.metrics import ALL_METRICS

pytestmark = pytest.mark.unit


def test_the_observability_guide_lists_every_metric_with_its_kind_and_labels(
    project_root: Path,
) -> None:
    guide = (project_root / "docs" / "observability.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in guide.splitlines()
        if line.startswith("| `lifelong_")
    }
    assert set(rows) == {m.name for m in ALL_METRICS}
    for metric in ALL_METRICS:
        cells = [c.strip() for c in rows[metric.name].split("|")[1:-1]]
        assert cells[1] == metric.kind, metric.name
        assert cells[2] == (", ".join(f"`{label}`" for label in metric.labels) or "-")
