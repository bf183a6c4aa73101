"""The container image without a Docker engine: hadolint lints the Dockerfile, and the builder
stage's steps run here on a copy of the build context the Dockerfile names, producing a wheel that
works from a fresh virtual environment."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.deploy.rendering import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} is missing: install the test tools (make test does)")
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.unit
def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout) == (0, "")


@pytest.mark.unit
def test_hadolint_would_catch_an_unpinned_base_and_unpinned_packages(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def stages() -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)


@pytest.mark.unit
def test_both_stages_start_from_one_exactly_pinned_base() -> None:
    builder, runtime = stages()
    assert builder == runtime
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", builder), builder


@pytest.mark.unit
def test_the_image_runs_lifelong_as_the_non_root_user_the_chart_expects() -> None:
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["lifelong"]' in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 65532:65532$", final, flags=re.MULTILINE)
    assert "COPY --from=builder /opt/lifelong /opt/lifelong" in final
    assert not re.search(r"\b(apt-get|gcc|pip wheel|build-essential)\b", final)
    assert "ARG VARIANT=cpu" in text and "download.pytorch.org/whl/cpu" in text
    assert '"${wheel}[s3,gcs]"' in text  # object stores work in the image


def build_context(target: Path) -> Path:
    """The paths the Dockerfile copies, copied as Docker would (links stay links)."""
    copied = re.findall(r"^COPY (?!--)(.+) \S+$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    names = [name.rstrip("/") for line in copied for name in line.split()]
    assert {"pyproject.toml", "README.md", "lifelong", "operator", "trainers"} <= set(names)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    target.mkdir()
    for name in names:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.integration
def test_the_wheel_holds_operator_and_trainers_and_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    # The builder stage: `pip wheel --no-deps .` in a copy of the build context. Offline here,
    # so without build isolation (the project's environment has setuptools).
    context = build_context(tmp_path / "context")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--quiet", "--wheel-dir", tmp_path / "wheels", ".", cwd=context)  # fmt: skip
    (wheel,) = (tmp_path / "wheels").glob("lifelong-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("lifelong/cli.py", "lifelong/operator/main.py", "lifelong/operator/kube.py",
                   "lifelong/trainers/main.py", "lifelong/trainers/serving.py",
                   "lifelong/api/job.py", "lifelong/engine/step.py"):  # fmt: skip
        assert module in names
    assert not [n for n in names if n.startswith(("tests/", "operator/", "trainers/"))]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    extras = re.findall(r"^Provides-Extra: (\S+)$", zipfile.ZipFile(wheel).read(metadata).decode(),
                        flags=re.MULTILINE)  # fmt: skip
    assert {"s3", "gcs"} <= set(extras)

    # Then `pip install` of the wheel into a venv of its own. Its dependencies (torch and the
    # rest) come from the project's environment through a .pth line instead of the network.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--no-index", wheel, cwd=tmp_path)  # fmt: skip
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                    cwd=tmp_path).strip())  # fmt: skip
    (site / "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    lifelong = venv / "bin" / "lifelong"
    assert run(lifelong, "--version", cwd=tmp_path).strip() == "lifelong 0.1.0"
    assert "ok: AutoDLJob digits" in run(
        lifelong, "validate", ROOT / "examples" / "digits.yaml", cwd=tmp_path
    )
    run(lifelong, "crds", "--output", tmp_path / "crds", cwd=tmp_path)
    for crd in (ROOT / "crds").glob("*.yaml"):
        assert (tmp_path / "crds" / crd.name).read_text() == crd.read_text()

    where = run(python, "-c", "import lifelong.operator.main as o, lifelong.trainers.main as t; "
                "print(o.__file__); print(t.__file__)", cwd=tmp_path)  # fmt: skip
    assert all(line.startswith(str(site)) for line in where.split())
