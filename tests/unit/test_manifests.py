"""`lifelong validate`: every kind of mistake exits 1 and names the field path and the value."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from lifelong.cli import main
from lifelong.manifests import parse_documents, validate_files

pytestmark = pytest.mark.unit

GOOD = """\
apiVersion: lifelong.dev/v1alpha1
kind: AutoDLJob
metadata: {name: digits}
spec:
  data: {train: {uri: "builtin://digits"}}
  search:
    budget: {trials: 8, parallelism: 2, timeout: 15m}
  training: {resources: {cpu: 500m, memory: 2Gi}}
  lifelong:
    gate: {maxForgetting: 0.05}
"""

# (what is wrong, the change to the good manifest, the field path, text the message must hold)
MISTAKES = [
    ("negative budget", ("trials: 8", "trials: -3"), "spec.search.budget.trials", "-3"),
    (
        "negative parallelism",
        ("parallelism: 2", "parallelism: -2"),
        "spec.search.budget.parallelism",
        "-2",
    ),
    (
        "negative epochs",
        ("timeout: 15m}", "timeout: 15m, maxEpochs: -1}"),
        "spec.search.budget.maxEpochs",
        "-1",
    ),
    (
        "negative update budget",
        ("  lifelong:\n", "  lifelong:\n    maxUpdates: -4\n"),
        "spec.lifelong.maxUpdates",
        "-4",
    ),
    ("negative cpu", ("cpu: 500m", "cpu: '-1'"), "spec.training.resources.cpu", "negative"),
    (
        "unknown strategy",
        ("search:\n", "search:\n    strategy: grid\n"),
        "spec.search.strategy",
        "'grid'",
    ),
    (
        "forgetting above 1",
        ("maxForgetting: 0.05", "maxForgetting: 1.5"),
        "spec.lifelong.gate.maxForgetting",
        "1.5",
    ),
    ("unknown field", ("  search:\n", "  serach: {}\n  search:\n"), "spec.serach", "unknown field"),
    (
        "wrong apiVersion",
        ("lifelong.dev/v1alpha1", "lifelong.dev/v9"),
        "apiVersion",
        "lifelong.dev/v9",
    ),
    ("wrong kind", ("kind: AutoDLJob", "kind: AutoMLJob"), "kind", "AutoMLJob"),
    (
        "malformed duration",
        ("timeout: 15m", "timeout: 15 minutes"),
        "spec.search.budget.timeout",
        "15 minutes",
    ),
    ("malformed quantity", ("memory: 2Gi", "memory: 2GB"), "spec.training.resources.memory", "2GB"),
    (
        "parallelism above trials",
        ("parallelism: 2", "parallelism: 20"),
        "spec.search.budget",
        "parallelism (20) must not exceed trials (8)",
    ),
    (
        "bad data URI",
        ('"builtin://digits"', '"ftp://host/file.csv"'),
        "spec.data.train.uri",
        "ftp://host/file.csv",
    ),
    ("name too long", ("name: digits", "name: " + "d" * 50), "", "at most 45"),
]


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_good_manifest_validates(tmp_path: Path) -> None:
    resources, problems = validate_files([write(tmp_path, GOOD)])
    assert problems == []
    assert len(resources) == 1


@pytest.mark.parametrize(
    ("mistake", "change", "path", "value"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_each_mistake_exits_1_naming_the_field_and_value(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mistake: str,
    change: tuple[str, str],
    path: str,
    value: str,
) -> None:
    assert change[0] in GOOD, f"the table's change for {mistake} no longer applies"
    file = write(tmp_path, GOOD.replace(change[0], change[1], 1))

    status = main(["validate", str(file)])

    err = capsys.readouterr().err
    assert status == 1
    assert f"{path}:" in err or (path == "" and "document 0:" in err), err
    assert value in err, err
    assert str(file) in err


def test_a_yaml_syntax_error_gives_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write(tmp_path, GOOD.replace("{trials: 8,", "{trials: [8,"))
    assert main(["validate", str(file)]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"{re.escape(str(file))}:7:[0-9]+: ", err), err  # line and column
    assert "YAML syntax error" in err


def test_every_problem_of_a_document_is_listed(tmp_path: Path) -> None:
    text = GOOD.replace("trials: 8", "trials: -1").replace("memory: 2Gi", "memory: lots")
    _, problems = validate_files([write(tmp_path, text)])
    assert {p.path for p in problems} == {
        "spec.search.budget.trials",
        "spec.training.resources.memory",
    }


def test_problems_point_at_the_line_of_the_field(tmp_path: Path) -> None:
    _, problems = validate_files([write(tmp_path, GOOD.replace("trials: 8", "trials: 0"))])
    assert [p.line for p in problems] == [7]


def test_several_files_and_documents_are_checked(tmp_path: Path) -> None:
    second = GOOD.replace("name: digits", "name: other")
    both = write(tmp_path, GOOD + "---\n" + second.replace("trials: 8", "trials: 0"), "two.yaml")
    _, problems = validate_files([write(tmp_path, GOOD), both])
    assert [(Path(p.file).name, p.document) for p in problems] == [("two.yaml", 1)]


def test_numbers_are_read_as_kubernetes_reads_them() -> None:
    [document] = parse_documents("a: 1e-3\nb: 10\nc: '1e-3'\n")
    assert document.data == {"a": 0.001, "b": 10, "c": "1e-3"}


@pytest.mark.parametrize(
    "trigger",
    [
        "{name: t, metric: m, below: 1, promql: up}",
        "{name: t, metric: m}",
        "{name: t, metric: m, below: 1, above: 2}",
        "{name: t, promql: up, window: 1m}",
    ],
)
def test_a_trigger_must_be_either_structured_or_promql(tmp_path: Path, trigger: str) -> None:
    text = GOOD.replace("  lifelong:\n", f"  lifelong:\n    triggers: [{trigger}]\n")
    _, problems = validate_files([write(tmp_path, text)])
    assert [p.path for p in problems] == ["spec.lifelong.triggers[0]"]


def test_every_example_validates(project_root: Path) -> None:
    examples = sorted((project_root / "examples").rglob("*.yaml"))
    jobs = [p for p in examples if "apiVersion: lifelong.dev/" in p.read_text()]
    assert jobs, "no example manifests found"
    resources, problems = validate_files(list(jobs))
    assert problems == []
    assert len(resources) >= len(jobs)


def test_validate_prints_ok_for_each_resource(
    project_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(project_root / "examples" / "digits.yaml")]) == 0
    assert "ok: AutoDLJob digits" in capsys.readouterr().out


def test_the_main_example_names_both_required_trigger_forms(tmp_path: Path) -> None:
    text = textwrap.dedent(GOOD) + textwrap.indent(
        textwrap.dedent(
            """\
            triggers:
              - {name: accuracy-drop, metric: lifelong_online_accuracy, window: 2m,
                 aggregate: avg, below: 0.9}
              - {name: custom, promql: 'increase(lifelong_drift_detected_total[5m]) > 0'}
            """
        ),
        "    ",
    )
    [document] = parse_documents(text)
    assert len(document.data["spec"]["lifelong"]["triggers"]) == 2
    file = write(tmp_path, text)
    resources, problems = validate_files([file])
    assert problems == [] and len(resources) == 1


def test_lifelong_run_refuses_raw_promql_without_a_prometheus_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trigger = "{name: custom, promql: 'increase(lifelong_drift_detected_total[5m]) > 0'}"
    text = GOOD.replace("  lifelong:\n", f"  lifelong:\n    triggers:\n      - {trigger}\n")
    file = write(tmp_path, text)

    assert main(["run", str(file), "--output", str(tmp_path / "out")]) == 2

    err = capsys.readouterr().err
    assert f"{file}:11: document 0, spec.lifelong.triggers[0].promql:" in err, err
    assert "spec.lifelong.prometheus.url" in err
    assert not (tmp_path / "out").exists()
