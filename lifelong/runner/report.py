"""The end of a local run: `summary.json` for programs and `report.html` for people.

The report shows the online metric along the stream with the moments that mattered (drift
signals, triggers, updates, promotions and rejections), the search's progress, and every
version with its metrics and lineage. Plots are drawn with matplotlib and embedded, so the
report is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lifelong.api import METRIC_MODES
from lifelong.engine.names import version_number

MARKERS = {
    "TriggerFired": ("#d62728", "trigger"),
    "CandidatePromoted": ("#2ca02c", "promoted"),
    "CandidateRejected": ("#7f7f7f", "rejected"),
    "CanaryStarted": ("#17becf", "canary"),
    "CanaryRolledBack": ("#8c564b", "rolled back"),
    "UpdateFailed": ("#ff7f0e", "update failed"),
}


# --- summary ---------------------------------------------------------------------------------


def summarize(state: Any, job_name: str, metric: str) -> dict[str, Any]:
    """The run's summary: versions, updates, online metric before and after drift, wall time."""
    versions = []
    updates = []
    for name in sorted(state.versions, key=_order):
        entry = state.versions[name]
        spec = entry.get("spec") or {}
        metrics = {**(spec.get("metrics") or {})}
        if "score" in spec:
            metrics["score"] = spec["score"]
        versions.append({
            "name": name,
            "parent": spec.get("parent"),
            "state": entry.get("state"),
            "trigger": spec.get("trigger"),
            "strategy": spec.get("strategy"),
            "metrics": metrics,
            "objectives": spec.get("objectives") or {},
            "gate": entry.get("gate"),
        })  # fmt: skip
        if spec.get("stage") == "update" or spec.get("parent"):
            gate = entry.get("gate") or {}
            updates.append({
                "candidate": name,
                "parent": spec.get("parent"),
                "trigger": spec.get("trigger"),
                "strategy": spec.get("strategy"),
                "decision": _decision(entry.get("state"), gate.get("decision")),
                "state": entry.get("state"),
                "gain": gate.get("gain"),
                "forgetting": gate.get("forgetting"),
                "reason": gate.get("reason") or entry.get("message"),
            })  # fmt: skip
    # An update whose stage gave up made no version; it is an update all the same.
    for failed in getattr(state, "failed_updates", []):
        updates.append({
            "candidate": None, "parent": failed.get("parent"), "trigger": failed.get("trigger"),
            "strategy": failed.get("strategy"), "decision": "failed", "state": None,
            "gain": None, "forgetting": None, "reason": failed.get("reason"),
        })  # fmt: skip
    return {
        "job": job_name,
        "phase": (state.status or {}).get("phase"),
        "servingVersion": (state.status or {}).get("servingVersion"),
        "versions": versions,
        "updates": updates,
        "online": _online(state, metric),
        "events": state.timeline.events,
        "wallSeconds": round(state.wall, 1),
    }


def _order(name: str) -> tuple[int, str]:
    try:
        return version_number(name), name
    except (IndexError, ValueError):
        return 1 << 30, name


def _decision(state: str | None, gate: str | None) -> str:
    """How an update ended: its version's state says more than the gate alone (a candidate
    that passed the gate can still be rolled back as a canary, or be a canary still)."""
    return {
        "Serving": "promote",
        "Retired": "promote",
        "Rejected": "reject",
        "RolledBack": "rollback",
        "Canary": "canary",
    }.get(state or "", gate or "pending")


def _online(state: Any, metric: str) -> dict[str, Any]:
    points = [p for p in state.timeline.online if p.get("value") is not None]
    phases = state.timeline.phases
    change = phases[1] if len(phases) > 1 else None
    before = [p["value"] for p in points if change is None or p["position"] <= change]
    after = [p["value"] for p in points if change is not None and p["position"] > change]
    return {
        "metric": metric.removeprefix("lifelong_online_"),
        "beforeDrift": before[-1] if before else None,
        "worstAfterDrift": (max(after) if "error" in metric else min(after)) if after else None,
        "end": points[-1]["value"] if points else None,
        "driftAt": change,
        "records": points[-1]["position"] if points else 0,
    }


# --- the report ------------------------------------------------------------------------------


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _online_plot(state: Any, summary: dict[str, Any]) -> str:
    figure, axis = plt.subplots(figsize=(11, 4.2))
    points = [p for p in state.timeline.online if p.get("value") is not None]
    axis.plot(
        [p["position"] for p in points],
        [p["value"] for p in points],
        color="#1f77b4",
        linewidth=1.8,
        label=f"online {summary['online']['metric']}",
    )
    for start in state.timeline.phases[1:]:
        axis.axvspan(start, start + 0.5, color="#9467bd", alpha=0.6)
        axis.annotate(
            "new phase",
            (start, 0.02),
            xycoords=("data", "axes fraction"),
            color="#9467bd",
            fontsize=8,
            rotation=90,
            va="bottom",
        )
    seen: set[str] = set()
    for drift in state.timeline.drifts[1:]:
        label = None if "drift" in seen else "drift signalled"
        seen.add("drift")
        axis.axvline(drift["position"], color="#bcbd22", linestyle=":", label=label)
    for event in state.timeline.events:
        marker = MARKERS.get(event["reason"])
        if marker is None:
            continue
        colour, text = marker
        axis.axvline(
            event["position"], color=colour, linestyle="--", label=None if text in seen else text
        )
        seen.add(text)
    axis.set_xlabel("stream record")
    axis.set_ylabel(summary["online"]["metric"])
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title("Online metric over the stream, with drift, triggers and updates")
    return _png(figure)


def _versions_plot(summary: dict[str, Any]) -> str | None:
    """Each version's score on its test data, and each update's gain and forgetting against
    the gate's limits."""
    versions = [v for v in summary["versions"] if "score" in v["metrics"]]
    if not versions:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    colours = {"Serving": "#2ca02c", "Retired": "#98df8a", "Rejected": "#7f7f7f"}
    left.bar(
        [v["name"] for v in versions],
        [float(v["metrics"]["score"]) for v in versions],
        color=[colours.get(str(v["state"]), "#1f77b4") for v in versions],
    )
    left.set_ylabel(f"{summary['online']['metric']} on its test data")
    left.set_title("Versions (green: promoted, grey: rejected)")
    left.tick_params(axis="x", labelrotation=30, labelsize=8)
    left.grid(alpha=0.3, axis="y")

    judged = [v for v in versions if v.get("gate")]
    if judged:
        positions = range(len(judged))
        right.bar([i - 0.2 for i in positions], [v["gate"]["gain"] for v in judged], 0.4,
                  label="gain on new data", color="#1f77b4")  # fmt: skip
        right.bar([i + 0.2 for i in positions], [v["gate"]["forgetting"] for v in judged], 0.4,
                  label="forgetting on old data", color="#d62728")  # fmt: skip
        gate = judged[-1]["gate"]
        right.axhline(gate["maxForgetting"], color="#d62728", linestyle="--",
                      label="maxForgetting")  # fmt: skip
        right.axhline(gate["minGain"], color="#1f77b4", linestyle=":", label="minGain")
        right.set_xticks(list(positions), [v["name"] for v in judged], rotation=30, fontsize=8)
        right.legend(fontsize=8)
        right.grid(alpha=0.3, axis="y")
        right.set_title("The gate's numbers for each candidate")
    else:
        right.axis("off")
    return _png(figure)


def _search_plot(store: Path, metric: str) -> str | None:
    trials_file = store / "search" / "trials.jsonl"
    if not trials_file.exists():
        return None
    trials = []
    for line in trials_file.read_text(encoding="utf-8").splitlines():
        try:
            trials.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    values = [v for v in (_trial_value(t, metric) for t in trials) if v is not None]
    if not values:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    pick = min if METRIC_MODES.get(metric, "max") == "min" else max
    best = [pick(values[: i + 1]) for i in range(len(values))]
    left.scatter(range(1, len(values) + 1), values, s=14, color="#1f77b4", label="trial")
    left.plot(range(1, len(best) + 1), best, color="#2ca02c", label="best so far")
    left.set_xlabel("trial (in order of completion)")
    left.set_ylabel(metric)
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    left.set_title("Search progress")
    latencies = [_trial_value(t, "latencyMs") for t in trials]
    pairs = [
        (lat, v)
        for lat, v in zip(latencies, [_trial_value(t, metric) for t in trials], strict=True)
        if lat is not None and v is not None
    ]
    if pairs:
        right.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=14, color="#ff7f0e")
        right.set_xlabel("latency per example (ms)")
        right.set_ylabel(metric)
        right.grid(alpha=0.3)
        right.set_title("Quality against latency")
    else:
        right.axis("off")
    return _png(figure)


def _trial_value(trial: dict[str, Any], key: str) -> float | None:
    for container in (trial, trial.get("metrics") or {}, trial.get("objectives") or {}):
        value = container.get(key) if isinstance(container, dict) else None
        if isinstance(value, int | float):
            return float(value)
    return None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2rem; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: left; }
th { background: #f4f4f4; } img { max-width: 100%; }
.cards { display: flex; gap: 1rem; margin: 1rem 0; }
.card { background: #f7f7f9; border-radius: 8px; padding: 0.7rem 1.1rem; }
.card b { display: block; font-size: 1.4rem; }
"""


def write_report(state: Any, summary: dict[str, Any], store: Path, path: Path) -> None:
    """Write the self-contained HTML report."""
    online = summary["online"]
    cards = [
        ("versions", str(len(summary["versions"]))),
        ("updates promoted", str(sum(u["decision"] == "promote" for u in summary["updates"]))),
        (f"{online['metric']} before drift", _cell(online["beforeDrift"])),
        (f"worst {online['metric']} after drift", _cell(online["worstAfterDrift"])),
        (f"{online['metric']} at the end", _cell(online["end"])),
        ("wall time", f"{summary['wallSeconds']:.0f}s"),
    ]
    parts = [
        f"<h1>Lifelong report: {html.escape(summary['job'])}</h1>",
        f"<p class='sub'>Serving {html.escape(str(summary['servingVersion']))}; "
        f"phase {html.escape(str(summary['phase']))}.</p>",
        "<div class='cards'>"
        + "".join(
            f"<div class='card'>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in cards
        )
        + "</div>",
    ]
    if state.timeline.online:
        parts.append(
            f"<h2>Online metric</h2><img src='data:image/png;base64,"
            f"{_online_plot(state, summary)}'>"
        )
    search = _search_plot(store, online["metric"] if online["metric"] != "error" else "rmse")
    if search:
        parts.append(f"<h2>Search</h2><img src='data:image/png;base64,{search}'>")
    versions = _versions_plot(summary)
    parts.append(
        "<h2>Model versions</h2>"
        + (f"<img src='data:image/png;base64,{versions}'>" if versions else "")
        + _table(summary["versions"], ["name", "parent", "state", "trigger", "strategy", "metrics"])
    )
    if summary["updates"]:
        parts.append(
            "<h2>Updates and the gate</h2>"
            + _table(
                summary["updates"],
                ["candidate", "trigger", "strategy", "decision", "gain", "forgetting", "reason"],
            )
        )
    parts.append(
        "<h2>Decisions</h2>"
        + _table(summary["events"], ["position", "time", "type", "reason", "message"])
    )
    document = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Lifelong: "
        f"{html.escape(summary['job'])}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    path.write_text(document, encoding="utf-8")
