"""Entry point of `lifelong run JOB.yaml [--output DIR] [--fresh]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from lifelong.manifests import ManifestError, check_local_run, load_job
from lifelong.runner.local import LocalRunner, _online_metric
from lifelong.runner.report import summarize, write_report


def stop_on_signals() -> None:
    """Make Ctrl-C and SIGTERM stop the run cleanly, so that a re-run continues from there.

    Set explicitly because a shell that starts `lifelong run` in the background hands it SIGINT
    ignored, and Python then never raises KeyboardInterrupt.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(args: argparse.Namespace) -> int:
    stop_on_signals()
    logging.basicConfig(level=os.environ.get("LIFELONG_LOG_LEVEL", "WARNING"))
    try:
        job = load_job(args.job)
        problems = check_local_run(args.job, job)
        if problems:
            raise ManifestError(problems)
    except ManifestError as error:
        print(f"lifelong run: the job manifest is invalid:\n{error}", file=sys.stderr)
        return 2
    output = Path(args.output or Path("runs") / job.metadata.name)
    runner = LocalRunner(job, Path(args.job), output, fresh=bool(args.fresh))
    code = runner.run()
    if code == 130:
        return code

    metric = _online_metric(job)
    summary = summarize(runner.state, job.metadata.name, metric)
    summary_path = output / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    report = (output / "report.html").resolve()
    write_report(runner.state, summary, runner.workspace.store, report)
    runner.console.summary(summary, report)
    return code
