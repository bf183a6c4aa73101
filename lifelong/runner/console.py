"""What `lifelong run` prints: stages as they start and end, their progress lines, the stream's
position and accuracy, and every decision as it happens, then a summary table.

Plain lines, one per happening, so the output reads the same in a terminal and in a CI log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console as RichConsole
from rich.table import Table

from lifelong.api import AutoDLJob
from lifelong.engine.model import Event, StageRun, StartStage

PROGRESS_EVERY = 100
"""Records between two progress lines of the stream."""


class Console:
    """Human-readable progress of a local run."""

    def __init__(self, console: RichConsole | None = None) -> None:
        self.out = console or RichConsole(highlight=False, soft_wrap=True)
        self._last_progress = -PROGRESS_EVERY

    def begin(self, job: AutoDLJob, folder: Path, *, resumed: bool, records: int) -> None:
        verb = "Resuming" if resumed else "Running"
        self.out.print(f"[bold]{verb} AutoDLJob {job.metadata.name}[/] in {folder}")
        if records:
            stream = job.spec.data.stream
            order = stream.order if stream else "as-is"
            self.out.print(
                f"  stream: {records} records ({order}), labels arrive "
                f"{stream.label_delay if stream else 0} records later"
            )

    def note(self, text: str) -> None:
        self.out.print(f"  {text}")

    def stage_started(self, action: StartStage) -> None:
        detail = f" → {action.version}" if action.version else ""
        self.out.print(f"[bold cyan]▶ {action.stage.value}[/] {action.name}{detail}")

    def stage_line(self, line: str) -> None:
        if line.strip():
            self.out.print(f"    [dim]{_escape(line)}[/]")

    def stage_ended(self, action: StartStage, run: StageRun, seconds: float) -> None:
        if run.state == "succeeded":
            self.out.print(f"[bold green]✓ {action.stage.value}[/] {action.name} in {seconds:.1f}s")
        else:
            self.out.print(
                f"[bold red]✗ {action.stage.value}[/] {action.name} "
                f"failed after {seconds:.1f}s: {_escape(run.message)}"
            )

    def event(self, event: Event, position: int, seconds: float) -> None:
        colour = "yellow" if event.type == "Warning" else "magenta"
        self.out.print(
            f"[{colour}]● {event.reason}[/] [dim](record {position}, "
            f"t={seconds:.0f}s)[/] {_escape(event.message)}"
        )

    def drift(self, position: int, detectors: list[str]) -> None:
        self.out.print(
            f"[yellow]◆ Drift[/] [dim](record {position})[/] signalled by {', '.join(detectors)}"
        )

    def progress(
        self, position: int, total: int, value: float | None, metric: str, serving: str | None
    ) -> None:
        if position - self._last_progress < PROGRESS_EVERY and position < total:
            return
        self._last_progress = position
        shown = "n/a" if value is None else f"{value:.3f}"
        name = metric.removeprefix("lifelong_online_")
        self.out.print(f"  stream {position}/{total} · online {name} {shown} · serving {serving}")

    def summary(self, summary: dict[str, Any], report: Path) -> None:
        table = Table(title="Model versions", show_lines=False)
        for column in ("version", "parent", "state", "trigger", "score"):
            table.add_column(column)
        for version in summary["versions"]:
            score = version["metrics"].get("score")
            table.add_row(
                version["name"],
                version["parent"] or "-",
                version["state"],
                version["trigger"] or "-",
                "-" if score is None else f"{score:.4f}",
            )
        self.out.print(table)
        if summary["updates"]:
            updates = Table(title="Updates")
            for column in ("candidate", "trigger", "decision", "gain", "forgetting"):
                updates.add_column(column)
            for update in summary["updates"]:
                updates.add_row(
                    update["candidate"] or "-",
                    update["trigger"] or "-",
                    update["decision"],
                    _num(update["gain"]),
                    _num(update["forgetting"]),
                )
            self.out.print(updates)
        online = summary["online"]
        self.out.print(
            f"Online {online['metric']}: before drift {_num(online['beforeDrift'])}, worst after "
            f"drift {_num(online['worstAfterDrift'])}, at the end {_num(online['end'])}. "
            f"Wall time {summary['wallSeconds']:.0f}s."
        )
        self.out.print(f"Report: {report}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
