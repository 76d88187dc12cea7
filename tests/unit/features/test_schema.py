"""The documented input schema: what is accepted, and the message for what is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import schema
from features.schema import DataError, ReadOptions, id_text, is_in, load_dataset, validate_interactions

T0 = 1_700_000_000  # 2023-11-14


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
    assert data.notes == [
        "i.csv: timestamps read as ISO 8601 text (offsets applied; none means UTC) "
        "(row 2: '2024-01-01T00:00:00Z' is 2024-01-01T00:00:00+00:00)"
    ]


def test_weight_defaults_to_one_and_unix_seconds_parse(tmp_path):
    inter = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n1,2,1700000000\n")
    data = load_dataset(inter)
    assert data.interactions["weight"].tolist() == [1.0]
    assert data.interactions["timestamp"].tolist() == [1700000000]


def test_parquet_lists_and_integer_ids(tmp_path):
    pd.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "timestamp": [T0, T0 + 1]}).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({"item_id": [10, 11], "genres": [["a", "b"], []]}).to_parquet(tmp_path / "items.parquet")
    data = load_dataset(tmp_path / "i.parquet", items=tmp_path / "items.parquet")
    assert data.interactions["item_id"].tolist() == ["10", "11"]
    assert data.items.loc["10", "genres"] == ("a", "b")
    assert data.items.loc["11", "genres"] == ()


def test_missing_attribute_rows_are_reported_not_fatal(tmp_path):
    inter = write(tmp_path / "i.csv", f"user_id,item_id,timestamp\n1,a,{T0}\n2,a,{T0}\n3,b,{T0}\n")
    users = write(tmp_path / "u.csv", "user_id,age\n1,20\n")
    data = load_dataset(inter, users)
    assert data.notes[-1] == "2 of 3 users have no attributes (treated as unknown)"


@pytest.mark.parametrize(
    ("interactions", "message"),
    [
        (
            "user_id,timestamp\n1,5\n",
            "i.csv: column 'item_id': missing required column (found: user_id, timestamp)",
        ),
        (
            "user_id,item_id,timestamp\n1,2,5\n1,3,yesterday\n",
            "i.csv: column 'timestamp': row 3 (header = row 1): unparsable timestamp 'yesterday' "
            "(expected unix time or ISO 8601)",
        ),
        (
            "user_id,item_id,timestamp,weight\n1,2,5,1\n1,3,6,lots\n",
            "i.csv: column 'weight': row 3 (header = row 1): weight must be a non-negative number, got 'lots'",
        ),
        (
            "user_id,item_id,timestamp,weight\n1,2,5,-1\n",
            "i.csv: column 'weight': row 2 (header = row 1): weight must be a non-negative number, got '-1'",
        ),
        (
            "user_id,item_id,timestamp\n1,,5\n",
            "i.csv: column 'item_id': row 2 (header = row 1): "
            "missing id (empty cells and NULL, None, nan, N/A are missing)",
        ),
        (
            "user_id,item_id,timestamp\n1,2,5\n1,2,\n",
            "i.csv: column 'timestamp': row 3 (header = row 1): blank timestamp",
        ),
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
    inter = write(tmp_path / "i.csv", f"user_id,item_id,timestamp\n1,a,{T0}\n")
    items = write(tmp_path / "items.csv", "item_id,title\na,A\nb,B\na,again\n")
    with pytest.raises(DataError, match=r"items.csv: column 'item_id': row 4 \(header = row 1\): duplicate id 'a'$"):
        load_dataset(inter, items=items)


def test_unreadable_and_missing_files(tmp_path):
    garbage = tmp_path / "i.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"i.parquet: cannot be read \("):
        load_dataset(garbage)
    with pytest.raises(DataError, match=r"nope.csv: file not found$"):
        load_dataset(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("values", "unit"),
    [
        ([T0, T0 + 86_400], "unix seconds"),
        ([T0 * 10**3, (T0 + 86_400) * 10**3 + 999], "unix milliseconds"),
        ([T0 * 10**6, (T0 + 86_400) * 10**6], "unix microseconds"),
        ([T0 * 10**9, (T0 + 86_400) * 10**9], "unix nanoseconds"),
    ],
)
def test_epoch_units_are_told_by_magnitude_in_csv_and_parquet(tmp_path, values, unit):
    frame = pd.DataFrame({"user_id": [1, 1], "item_id": ["a", "b"], "timestamp": values})
    frame.to_csv(tmp_path / "i.csv", index=False)
    frame.to_parquet(tmp_path / "i.parquet")
    for name in ("i.csv", "i.parquet"):
        data = load_dataset(tmp_path / name)
        assert data.interactions["timestamp"].tolist() == [T0, T0 + 86_400]
        assert data.interactions["timestamp"].dtype == np.int64
        assert f"timestamps read as {unit}" in data.notes[0]
    assert f"(row 2: {values[0]} is 2023-11-14" in data.notes[0]  # the number as written, not np.int64(...)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_parquet_timestamps_of_any_unit_and_zone(tmp_path, unit):
    times = pd.to_datetime([T0, T0 + 1], unit="s").as_unit(unit)
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": times}).to_parquet(tmp_path / "n.parquet")
    aware = times.tz_localize("UTC").tz_convert("Europe/Paris")
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": aware}).to_parquet(tmp_path / "a.parquet")
    for name in ("n.parquet", "a.parquet"):
        assert load_dataset(tmp_path / name).interactions["timestamp"].tolist() == [T0, T0 + 1]


def test_iso_offsets_are_applied(tmp_path):
    inter = write(
        tmp_path / "i.csv", "user_id,item_id,timestamp\nu,a,2023-11-14T23:13:20+01:00\nu,b,2023-11-14 22:13:20\n"
    )
    assert load_dataset(inter).interactions["timestamp"].tolist() == [T0, T0]


def test_dates_outside_1990_to_next_year_stop_unless_allowed(tmp_path):
    inter = write(tmp_path / "i.csv", "user_id,item_id,timestamp\nu,a,1700000000\nu,b,86400\n")
    with pytest.raises(DataError) as error:
        load_dataset(inter)
    assert str(error.value) == (
        f"{inter}: column 'timestamp': row 3 (header = row 1): '86400' read as unix seconds falls in the year 1970, "
        "outside 1990-" + str(pd.Timestamp.now().year + 1) + ": if the dates are right, pass --allow-any-dates"
    )
    assert load_dataset(inter, options=ReadOptions(allow_any_dates=True)).interactions["timestamp"].tolist()[1] == 86400


@pytest.mark.parametrize(
    ("value", "text"),
    [(160, "160"), (160.0, "160"), ("160.0", "160"), (" 160 ", "160"), ("007", "007"), ("1.5", "1.5"), ("-3.00", "-3")],
)
def test_id_rule(value, text):
    assert id_text(value) == text


def test_float_ids_match_the_same_in_csv_and_parquet(tmp_path):
    write(tmp_path / "i.csv", f"user_id,item_id,timestamp\n 160.0 ,7,{T0}\n161, 8.0,{T0}\n")
    frame = pd.DataFrame({"user_id": [160.0, 161.0], "item_id": [7.0, 8.0], "timestamp": [T0, T0]})
    frame.to_parquet(tmp_path / "i.parquet")
    items = write(tmp_path / "items.csv", "item_id,title\n7,Seven\n8,Eight\n")
    for name in ("i.csv", "i.parquet"):
        data = load_dataset(tmp_path / name, items=items)
        assert data.interactions["user_id"].tolist() == ["160", "161"]
        assert data.interactions["item_id"].tolist() == ["7", "8"]


def test_the_id_rule_runs_once_per_distinct_id_in_text_and_number_columns(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(schema, "id_text", lambda value: calls.append(value) or id_text(value))
    frame = pd.DataFrame({"user_id": ["u1", "u2"] * 50, "item_id": [7.0, 8.0, 9.0, 7.0] * 25, "timestamp": T0})
    frame.to_parquet(tmp_path / "i.parquet")
    interactions = load_dataset(tmp_path / "i.parquet").interactions
    assert interactions["item_id"].tolist()[:4] == ["7", "8", "9", "7"]
    assert sorted(map(str, calls)) == ["7.0", "8.0", "9.0", "u1", "u2"]  # 5 calls for 200 ids


def test_python_values_that_compare_equal_keep_their_own_text():
    frame = pd.DataFrame({"user_id": [1, True, 0, False], "item_id": ["a"] * 4, "timestamp": T0})
    assert validate_interactions(frame)["user_id"].tolist() == ["1", "True", "0", "False"]


@pytest.mark.parametrize("spelling", ["NULL", "nan", "None", "N/A", " "])
def test_null_spellings_are_missing_ids(tmp_path, spelling):
    inter = write(tmp_path / "i.csv", f"user_id,item_id,timestamp\n1,a,{T0}\n{spelling},a,{T0}\n")
    with pytest.raises(DataError, match=r"column 'user_id': row 3 \(header = row 1\): missing id"):
        load_dataset(inter)


def test_attribute_file_that_barely_matches_stops_with_samples(tmp_path):
    inter = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n" + "".join(f"1,i{n},{T0}\n" for n in range(20)))
    items = write(tmp_path / "items.csv", "item_id,title\n" + "".join(f"{n},T{n}\n" for n in range(20)) + "i0,Zero\n")
    with pytest.raises(DataError) as error:
        load_dataset(inter, items=items)
    assert str(error.value) == (
        f"{items}: column 'item_id': only 1 of the 20 items in the interactions have a row here (under 10%): "
        "ids here '0', '1', '2', '3', '4', in the interactions 'i0', 'i1', 'i2', 'i3', 'i4'"
    )


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_separator_is_sniffed_with_a_note(tmp_path, sep, name):
    inter = write(tmp_path / "i.csv", f"user_id{sep}item_id{sep}timestamp\n1{sep}a,b{sep}{T0}\n2{sep}c{sep}{T0}\n")
    data = load_dataset(inter)
    assert data.interactions["item_id"].tolist() == ["a,b", "c"]
    assert data.notes[0] == f"i.csv: read as {name}-separated (sniffed; --sep sets it)"
    assert load_dataset(inter, options=ReadOptions(sep=sep)).notes[0].startswith("i.csv: timestamps")


def test_latin1_falls_back_with_a_note(tmp_path):
    inter = tmp_path / "i.csv"
    inter.write_bytes(f"user_id,item_id,timestamp\nJosé,a,{T0}\n".encode("latin-1"))
    data = load_dataset(inter)
    assert data.interactions["user_id"].tolist() == ["José"]
    assert data.notes[0] == "i.csv: not UTF-8, read as Latin-1 (--encoding sets it)"
    with pytest.raises(DataError, match="cannot be read"):
        load_dataset(inter, options=ReadOptions(encoding="utf-8"))


def test_column_mapping_renames_in_every_file(tmp_path):
    inter = write(tmp_path / "r.csv", f"userId,movieId,rating,timestamp\n1,10,4.5,{T0}\n")
    items = write(tmp_path / "m.csv", "movieId,title\n10,Ten\n")
    mapping = {"userId": "user_id", "movieId": "item_id", "rating": "weight"}
    data = load_dataset(inter, items=items, options=ReadOptions(columns=mapping))
    assert data.interactions[["user_id", "item_id", "weight"]].values.tolist() == [["1", "10", 4.5]]
    assert data.items.loc["10", "title"] == "Ten"
    with pytest.raises(DataError, match=r"missing required column \(found: userId, movieId, rating, timestamp\); "):
        load_dataset(inter)
    with pytest.raises(DataError, match="--columns maps 'usrId' to 'user_id', but no file has a column 'usrId'"):
        load_dataset(inter, options=ReadOptions(columns={"usrId": "user_id", "movieId": "item_id"}))


def test_mapping_onto_a_column_the_file_already_has_is_ambiguous(tmp_path):
    inter = write(tmp_path / "i.csv", f"uid,user_id,item_id,timestamp\n1,2,a,{T0}\n")
    with pytest.raises(DataError, match=r"column 'user_id': has both 'uid' \(mapped to 'user_id'\) and 'user_id'$"):
        load_dataset(inter, options=ReadOptions(columns={"uid": "user_id"}))


def test_far_dates_allowed_are_still_described(tmp_path):
    inter = write(tmp_path / "i.csv", f"user_id,item_id,timestamp\nu,a,1e12\nu,b,{T0}\nu,c,{T0}\n")
    data = load_dataset(inter, options=ReadOptions(allow_any_dates=True))  # the median says seconds
    assert data.notes[0] == "i.csv: timestamps read as unix seconds (row 2: '1e12' is in the year 33658)"
    write(inter, f"user_id,item_id,timestamp\nu,a,1e40\nu,b,{T0}\nu,c,{T0}\n")
    with pytest.raises(DataError, match=r"row 2 \(header = row 1\): timestamp 1e\+40 is out of range$"):
        load_dataset(inter, options=ReadOptions(allow_any_dates=True))


def test_is_in_answers_as_pandas_isin_for_arrow_strings_and_objects():
    values = pd.Series(["u1", "u2", "u3", "u10"], dtype="str")
    among = pd.Series(["u3", "u1", "u9"], dtype="str").unique()
    assert is_in(values, among).tolist() == [True, False, True, False] == values.isin(among).tolist()
    assert is_in(np.array(["u2"], dtype=object), pd.Index(["u2"], dtype="str")).tolist() == [True]
    assert is_in([], among).tolist() == []


@pytest.mark.parametrize(
    ("timestamps", "message"),
    [
        ([1.7e9, np.nan], "blank timestamp"),  # a parquet float column with a null
        (pd.array([1_700_000_000, None], dtype="Int64"), "blank timestamp"),
        (pd.to_datetime([1.7e9, np.nan], unit="s", utc=True), "blank timestamp"),
        (["1700000000", " null "], "missing timestamp ' null '"),
    ],
)
def test_a_missing_timestamp_is_found_in_numbers_datetimes_and_text(timestamps, message):
    frame = pd.DataFrame({"user_id": ["u", "v"], "item_id": ["a", "b"], "timestamp": timestamps})
    with pytest.raises(DataError, match=rf"column 'timestamp': row 3 \(header = row 1\): {message}$"):
        validate_interactions(frame)
