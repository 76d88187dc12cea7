"""The documented input schema: what is accepted, and the message for what is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.schema import DataError, load_dataset


def write(path, text: str):
    path.write_text(text)
    return path


def test_csv_with_iso_times_lists_and_numeric_attributes(tmp_path):
    inter = write(
        tmp_path / "i.csv",
        "user_id,item_id,timestamp,weight\n007,a,2024-01-01T00:00:00Z,4\n007,b,2024-01-02T00:00:00+00:00,1.5\n",
    )
    items = write(tmp_path / "items.csv", "item_id,title,genres,year\na,Alpha,x|y,1999\nb,Beta,y,\n")
    users = write(tmp_path / "users.csv", "user_id,age,job\n007,31,spy\n")
    data = load_dataset(inter, users, items)
    assert list(data.interactions["user_id"]) == ["007", "007"]  # ids keep their spelling
    assert list(data.interactions["timestamp"]) == [1704067200, 1704153600]
    assert list(data.interactions["weight"]) == [4.0, 1.5]
    assert data.items.loc["a", "genres"] == ("x", "y")
    assert data.items.loc["b", "genres"] == ("y",)
    assert data.items["year"].dtype == np.float64 and np.isnan(data.items.loc["b", "year"])
    assert data.users.loc["007", "age"] == 31.0 and data.users.loc["007", "job"] == "spy"
    assert data.notes == []


def test_weight_defaults_to_one_and_unix_seconds_parse(tmp_path):
    inter = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n1,2,1700000000\n")
    data = load_dataset(inter)
    assert data.interactions["weight"].tolist() == [1.0]
    assert data.interactions["timestamp"].tolist() == [1700000000]


def test_parquet_lists_and_integer_ids(tmp_path):
    pd.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "timestamp": [5, 6]}).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({"item_id": [10, 11], "genres": [["a", "b"], []]}).to_parquet(tmp_path / "items.parquet")
    data = load_dataset(tmp_path / "i.parquet", items=tmp_path / "items.parquet")
    assert data.interactions["item_id"].tolist() == ["10", "11"]
    assert data.items.loc["10", "genres"] == ("a", "b")
    assert data.items.loc["11", "genres"] == ()


def test_missing_attribute_rows_are_reported_not_fatal(tmp_path):
    inter = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n1,a,1\n2,a,2\n3,b,3\n")
    users = write(tmp_path / "u.csv", "user_id,age\n1,20\n")
    data = load_dataset(inter, users)
    assert data.notes == ["2 of 3 users have no attributes (treated as unknown)"]


@pytest.mark.parametrize(
    ("interactions", "message"),
    [
        (
            "user_id,timestamp\n1,5\n",
            "i.csv: column 'item_id': missing required column (found: user_id, timestamp)",
        ),
        (
            "user_id,item_id,timestamp\n1,2,5\n1,3,yesterday\n",
            "i.csv: column 'timestamp': row 2: unparsable timestamp 'yesterday' (expected unix seconds or ISO 8601)",
        ),
        (
            "user_id,item_id,timestamp,weight\n1,2,5,1\n1,3,6,lots\n",
            "i.csv: column 'weight': row 2: weight must be a non-negative number, got 'lots'",
        ),
        (
            "user_id,item_id,timestamp,weight\n1,2,5,-1\n",
            "i.csv: column 'weight': row 1: weight must be a non-negative number, got '-1'",
        ),
        ("user_id,item_id,timestamp\n1,,5\n", "i.csv: column 'item_id': row 1: empty id"),
        ("user_id,item_id,timestamp\n", "i.csv: has a header but no rows"),
        ("", "i.csv: file is empty"),
    ],
)
def test_bad_interactions_name_file_column_and_row(tmp_path, interactions, message):
    path = write(tmp_path / "i.csv", interactions)
    with pytest.raises(DataError) as error:
        load_dataset(path)
    assert str(error.value) == f"{tmp_path}/{message}"


def test_duplicate_attribute_ids(tmp_path):
    inter = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n1,a,1\n")
    items = write(tmp_path / "items.csv", "item_id,title\na,A\nb,B\na,again\n")
    with pytest.raises(DataError, match=r"items.csv: column 'item_id': row 3: duplicate id 'a'$"):
        load_dataset(inter, items=items)


def test_unreadable_and_missing_files(tmp_path):
    garbage = tmp_path / "i.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"i.parquet: cannot be read \("):
        load_dataset(garbage)
    with pytest.raises(DataError, match=r"nope.csv: file not found$"):
        load_dataset(tmp_path / "nope.csv")
