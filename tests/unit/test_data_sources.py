"""Data sources by URI and format: every format the API names loads into the same table, and the
data sets that ship with installed packages load without a download."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifelong.api import DataSource, TaskSpec
from lifelong.trainers.data import DataError, infer_task, load_table

pytestmark = pytest.mark.unit

FRAME = pd.DataFrame({"x": [0.5, 1.5, 2.5, 3.5], "z": [1, 2, 3, 4], "label": ["a", "b", "a", "b"]})


def loaded(uri: str, **source: Any) -> pd.DataFrame:
    return load_table(DataSource(uri=uri, **source)).frame


def test_csv_parquet_and_gzipped_csv_load_the_same_table(tmp_path: Path) -> None:
    FRAME.to_csv(tmp_path / "t.csv", index=False)
    FRAME.to_parquet(tmp_path / "t.parquet", index=False)
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress((tmp_path / "t.csv").read_bytes()))
    (tmp_path / "t.data").write_bytes((tmp_path / "t.parquet").read_bytes())

    for name, source in [
        ("t.csv", {}),
        ("t.parquet", {}),
        ("t.csv.gz", {}),
        ("t.data", {"format": "parquet"}),
    ]:
        frame = loaded(f"file://{tmp_path / name}", **source)
        pd.testing.assert_frame_equal(frame, FRAME, check_dtype=False, obj=name)


def test_an_npz_source_reads_arrays_x_and_y(tmp_path: Path) -> None:
    features = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    np.savez(tmp_path / "t.npz", X=features, y=np.array([0, 1, 0, 1]))

    frame = loaded(f"file://{tmp_path / 't.npz'}")

    assert list(frame.columns) == [f"x{i}" for i in range(6)] + ["label"]
    assert frame.shape == (4, 7) and frame["x5"].tolist() == [5.0, 11.0, 17.0, 23.0]


def test_an_npz_source_without_x_and_y_names_the_arrays_it_found(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", features=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"t\.npz: an NPZ source needs arrays named X and y"):
        loaded(f"file://{tmp_path / 't.npz'}")


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_a_csv_over_http_loads_through_fsspec(http_folder: tuple[str, Path]) -> None:
    base, folder = http_folder
    FRAME.to_csv(folder / "t.csv", index=False)
    pd.testing.assert_frame_equal(loaded(f"{base}/t.csv"), FRAME, check_dtype=False)
    with pytest.raises(DataError, match="does not exist"):
        loaded(f"{base}/missing.csv")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("digits", "classification"),
        ("iris", "classification"),
        ("diabetes", "regression"),
        ("phishing", "classification"),
        ("trump-approval", "regression"),
    ],
)
def test_builtin_data_sets_load_from_installed_packages(name: str, kind: str) -> None:
    table = load_table(DataSource(uri=f"builtin://{name}"))
    assert len(table.frame) > 100 and "label" in table.frame.columns
    assert infer_task(table, TaskSpec()).type == kind


def test_a_storage_protocol_without_its_package_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr("lifelong.trainers.data.fsspec.open", missing)
    with pytest.raises(DataError, match=r"s3://bucket/t\.csv: .*s3fs.*s3 or gcs extra"):
        loaded("s3://bucket/t.csv")
