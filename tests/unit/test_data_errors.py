"""Bad training data ends the stage with a `DataError` that names the file and the column."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifelong.api import AutoDLJob, DataSource, TaskSpec
from lifelong.trainers.data import DataError, infer_task, load_table
from lifelong.trainers.prepared import prepare

pytestmark = pytest.mark.unit


def csv(tmp_path: Path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return f"file://{path}"


def job(uri: str, **task: str) -> AutoDLJob:
    return AutoDLJob.model_validate(
        {
            "metadata": {"name": "bad"},
            "spec": {"task": task, "data": {"train": {"uri": uri}}},
        }
    )


def test_a_missing_target_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    uri = csv(tmp_path, "a,b\n1,2\n3,4\n")

    with pytest.raises(DataError) as raised:
        infer_task(load_table(DataSource(uri=uri)), TaskSpec(target="price"))

    assert uri in str(raised.value)
    assert "'price'" in str(raised.value)
    assert "a, b" in str(raised.value)  # and says which columns there are


def test_an_empty_file_is_named(tmp_path: Path) -> None:
    uri = csv(tmp_path, "", name="empty.csv")

    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        load_table(DataSource(uri=uri))


def test_a_header_without_rows_is_named(tmp_path: Path) -> None:
    uri = csv(tmp_path, "x,label\n", name="header.csv")

    with pytest.raises(DataError, match=r"header\.csv: holds no rows"):
        load_table(DataSource(uri=uri))


def test_a_single_class_names_the_file_and_the_column(tmp_path: Path) -> None:
    uri = csv(tmp_path, "x,label\n" + "".join(f"{i},cat\n" for i in range(30)))

    with pytest.raises(DataError) as raised:
        prepare(job(uri))

    assert uri in str(raised.value)
    assert "'label'" in str(raised.value)
    assert "single class" in str(raised.value)


def test_a_non_numeric_regression_target_names_the_file_and_the_column(tmp_path: Path) -> None:
    uri = csv(tmp_path, "x,price\n" + "".join(f"{i},cheap\n" for i in range(30)))

    with pytest.raises(DataError) as raised:
        prepare(job(uri, type="regression", target="price"))

    assert uri in str(raised.value)
    assert "'price'" in str(raised.value)
    assert "not numeric" in str(raised.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/nowhere.csv"

    with pytest.raises(DataError, match=r"nowhere\.csv: the file does not exist"):
        prepare(job(uri))


def test_too_few_labelled_rows_name_the_file_and_the_column(tmp_path: Path) -> None:
    rows = "".join(f"{i},{'' if i > 3 else i % 2}\n" for i in range(30))
    uri = csv(tmp_path, "x,label\n" + rows)

    with pytest.raises(DataError) as raised:
        prepare(job(uri, target="label", type="classification"))

    assert uri in str(raised.value)
    assert "'label'" in str(raised.value)


def test_good_data_prepares_into_encoded_splits(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i % 3 * 1.5},{'abc'[i % 3]}\n" for i in range(60))
    uri = csv(tmp_path, "x,y,label\n" + rows)

    prepared = prepare(job(uri))

    assert prepared.task["classes"] == ["a", "b", "c"]
    assert prepared.rows("train") + prepared.rows("validation") + prepared.rows("test") == 60
    assert prepared.arrays["x_train"].dtype.name == "float32"
    assert set(prepared.arrays["y_train"].tolist()) == {0, 1, 2}
    assert prepared.digest.startswith("sha256:")
