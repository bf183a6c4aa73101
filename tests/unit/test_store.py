"""The artifact store never passes off a half-written or corrupt model version as complete."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lifelong.trainers.store import Store, StoreError

pytestmark = pytest.mark.unit

FILES = {"weights.pt": b"w" * 1000, "preprocessing.json": b"{}"}


def test_a_written_version_reads_back_with_its_digest(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    manifest = store.write_version("job-v1", FILES, {"spec": {"score": 0.9}})
    read, files = store.read_version("job-v1")
    assert files == FILES
    assert read["digest"] == manifest["digest"] and read["digest"].startswith("sha256:")
    assert store.versions() == ["job-v1"]


def test_a_process_killed_before_the_manifest_leaves_a_version_nobody_loads(
    tmp_path: Path,
) -> None:
    # A real process writes the files and is killed just before the manifest would be written.
    script = textwrap.dedent(
        f"""
        import os, signal
        from lifelong.trainers.store import Store
        store = Store({str(tmp_path)!r})
        store.write_version("job-v1", {{"a": b"1"}}, {{}})
        store.write_json = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        store.write_version("job-v2", {FILES!r}, {{}})
        """
    )
    process = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert process.returncode == -signal.SIGKILL

    store = Store(str(tmp_path))
    assert (tmp_path / "versions" / "job-v2" / "weights.pt").exists()
    assert store.versions() == ["job-v1"]
    with pytest.raises(StoreError, match="job-v2 is missing or incomplete"):
        store.read_version("job-v2")


def test_a_file_that_no_longer_matches_its_digest_is_refused(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    store.write_version("job-v1", FILES, {})
    (tmp_path / "versions" / "job-v1" / "weights.pt").write_bytes(b"tampered")
    with pytest.raises(StoreError, match=r"weights\.pt does not match its digest"):
        store.read_version("job-v1")


def test_a_failed_replacement_keeps_the_old_content_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(str(tmp_path))
    store.write_json({"round": 1}, "search", "state.json")

    def broken_move(*args: object, **kwargs: object) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(store.fs, "mv", broken_move)
    with pytest.raises(OSError, match="disk went away"):
        store.write_json({"round": 2}, "search", "state.json")
    assert store.read_json("search", "state.json") == {"round": 1}
