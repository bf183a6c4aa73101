"""Reading and checking manifests: multi-document YAML in, typed resources or precise errors out.

`lifelong validate`, `lifelong run` and the tests use this module. Every problem is reported
with the file, the document's index, the line, the field path as written in the manifest
(`spec.search.budget.trials`), the offending value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lifelong.api import API_VERSION, AutoDLJob, ModelVersion

KINDS: dict[str, type[BaseModel]] = {"AutoDLJob": AutoDLJob, "ModelVersion": ModelVersion}

Path_ = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """A safe loader that reads numbers as Kubernetes does (YAML 1.2: `1e-3` is a float)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|\.[0-9_]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


@dataclass
class Problem:
    """One thing wrong with a manifest."""

    file: str
    document: int
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        subject = f"document {self.document}"
        if self.path:
            subject += f", {self.path}"
        return f"{where}: {subject}: {self.message}"


@dataclass
class Document:
    """One YAML document of a manifest file, with the line of every field."""

    file: str
    index: int
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """The line of the deepest part of `path` present in the document (1-based)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


class ManifestError(Exception):
    """A manifest could not be read or is invalid; `problems` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _node_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            lines[(*path, name)] = key.start_mark.line + 1
            _node_lines(value, (*path, name), lines)
            lines[(*path, name)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, (*path, i), lines)


def parse_documents(text: str, file: str = "<string>") -> list[Document]:
    """Split YAML text into documents, skipping empty ones; syntax errors carry line and column."""
    documents: list[Document] = []
    try:
        nodes: Iterable[yaml.Node | None] = yaml.compose_all(text, Loader=_Loader)
        for index, node in enumerate(nodes):
            if node is None:  # an empty document, such as a trailing `---`
                continue
            lines: dict[Path_, int] = {}
            _node_lines(node, (), lines)
            data = _Loader(yaml.serialize(node)).get_single_data()
            documents.append(Document(file, index, data, lines))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        message = f"YAML syntax error: {error.problem or error.context}"
        raise ManifestError([Problem(file, len(documents), "", message, line, column)]) from error
    return documents


def _describe_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems(document: Document, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc: Path_ = tuple(item["loc"])
        # pydantic appends the name of a tagged or custom type's branch; drop non-field parts.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        path = ""
        for part in loc:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = str(item["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if item["type"] == "extra_forbidden":
            message = "unknown field (check its spelling and indentation)"
        elif item["type"] != "missing" and "input" in item:
            message += f" (got {_describe_value(item['input'])})"
        problems.append(
            Problem(document.file, document.index, path, message, document.line_of(loc))
        )
    return problems


def check_document(document: Document) -> tuple[BaseModel | None, list[Problem]]:
    """Validate one document against the model of its kind."""
    data = document.data

    def refuse(path: str, problem: str) -> tuple[None, list[Problem]]:
        line = document.line_of((path,) if path else ())
        return None, [Problem(document.file, document.index, path, problem, line)]

    if not isinstance(data, dict):
        return refuse("", "a manifest must be a mapping with apiVersion, kind, metadata and spec")
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if api_version != API_VERSION:
        return refuse("apiVersion", f"apiVersion must be {API_VERSION!r} (got {api_version!r})")
    model = KINDS.get(str(kind))
    if model is None:
        return refuse("kind", f"kind must be one of {', '.join(sorted(KINDS))} (got {kind!r})")
    try:
        return model.model_validate(data), []
    except ValidationError as error:
        return None, _problems(document, error)


def load_file(path: str | Path) -> list[Document]:
    """Read a manifest file into documents."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ManifestError([Problem(file, 0, "", f"cannot read the file: {error}")]) from error
    return parse_documents(text, file)


def validate_files(paths: list[str | Path]) -> tuple[list[BaseModel], list[Problem]]:
    """Validate every document of every file; return the resources and all problems found."""
    resources: list[BaseModel] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            documents = load_file(path)
        except ManifestError as error:
            problems.extend(error.problems)
            continue
        if not documents:
            problems.append(Problem(str(path), 0, "", "the file holds no YAML document"))
        for document in documents:
            resource, found = check_document(document)
            problems.extend(found)
            if resource is not None:
                resources.append(resource)
    return resources, problems


def load_job(path: str | Path) -> AutoDLJob:
    """Read exactly one valid AutoDLJob from a file, or raise ManifestError."""
    resources, problems = validate_files([path])
    if problems:
        raise ManifestError(problems)
    jobs = [r for r in resources if isinstance(r, AutoDLJob)]
    if len(jobs) != 1:
        message = f"expected exactly one AutoDLJob, found {len(jobs)}"
        raise ManifestError([Problem(str(path), 0, "", message)])
    return jobs[0]


def check_local_run(path: str | Path, job: AutoDLJob) -> list[Problem]:
    """What a valid job still needs to run under `lifelong run`, which has no operator.

    In a cluster the operator may supply the Prometheus server that raw PromQL triggers are
    evaluated on; on one machine only the job can name it.
    """
    if job.spec.lifelong.prometheus.url is not None:
        return []
    documents = [d for d in load_file(path) if isinstance(d.data, dict)]
    document = next(d for d in documents if d.data.get("kind") == "AutoDLJob")
    return [
        Problem(
            document.file,
            document.index,
            f"spec.lifelong.triggers[{index}].promql",
            f"trigger {trigger.name!r} is raw PromQL, which needs a Prometheus server, and "
            "`lifelong run` has no operator to supply one; set spec.lifelong.prometheus.url or "
            "write the trigger as metric, window, aggregate and a threshold",
            document.line_of(("spec", "lifelong", "triggers", index, "promql")),
        )
        for index, trigger in enumerate(job.spec.lifelong.triggers)
        if trigger.promql is not None
    ]
