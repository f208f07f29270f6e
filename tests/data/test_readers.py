"""Tests for recstudio_edge.data.readers on tiny generated files.

No MovieLens data is shipped: every test writes a few lines in the real file
formats under pytest's tmp_path.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from recstudio_edge.data.errors import DataError
from recstudio_edge.data.readers import (
    RawTables,
    detect_format,
    read_atomic,
    read_dataset,
    read_movielens,
    read_table,
)


def write(path, text, encoding="utf-8"):
    """Write ``text`` exactly (no newline translation) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def message(exc_info) -> str:
    return str(exc_info.value)


# ---------------------------------------------------------------- DataError


def test_data_error_formats():
    assert str(DataError("ratings.dat", 17, "rating", "expected float, got 'abc'")) == \
        "ratings.dat:17: field 'rating': expected float, got 'abc'"
    assert str(DataError("ratings.dat", 17, None, "expected 4 fields, got 3")) == \
        "ratings.dat:17: expected 4 fields, got 3"
    assert str(DataError("ratings.dat", None, None, "empty file")) == "ratings.dat: empty file"
    assert str(DataError("a/b.inter", None, "user_id", "x")) == "a/b.inter: field 'user_id': x"
    err = DataError("f", 2, "g", "m")
    assert isinstance(err, ValueError)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


# ---------------------------------------------------------------- atomic


ATOMIC_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t4\t978300760\n"
    "1\t20\t3.5\t978300761\n"
    "2\t10\t5\t978300762\n"
)


def test_read_atomic_with_user_and_item(tmp_path):
    write(tmp_path / "ml.inter", ATOMIC_INTER)
    write(tmp_path / "ml.user", "user_id:token\tage:token\tgender:token\n1\t25\tF\n2\t35\tM\n")
    write(tmp_path / "ml.item",
          "item_id:token\tmovie_title:token_seq\tgenre:token_seq\tscore:float_seq\n"
          "10\tToy Story\tAnimation Comedy\t0.5 1.5\n"
          "20\tHeat\tAction\t\n")
    rt = read_atomic(tmp_path, "ml")
    assert isinstance(rt, RawTables)
    assert list(rt.inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert rt.inter["user_id"].tolist() == ["1", "1", "2"]
    assert rt.inter["item_id"].tolist() == ["10", "20", "10"]
    assert rt.inter["rating"].dtype == np.float64
    assert rt.inter["rating"].tolist() == [4.0, 3.5, 5.0]
    assert rt.inter["timestamp"].dtype == np.float64
    assert rt.inter["timestamp"].iloc[2] == 978300762.0
    assert rt.user["gender"].tolist() == ["F", "M"]
    assert rt.item["genre"].tolist() == ["Animation Comedy", "Action"]  # seq fields: space-separated strings
    assert rt.item["score"].tolist() == ["0.5 1.5", ""]
    assert rt.field_types == {
        "user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float",
        "age": "token", "gender": "token", "movie_title": "token_seq", "genre": "token_seq",
        "score": "float_seq",
    }
    assert rt.skipped == 0


def test_read_atomic_optional_side_files_and_crlf(tmp_path):
    write(tmp_path / "x.inter", ATOMIC_INTER.replace("\n", "\r\n"))
    rt = read_atomic(tmp_path, "x")
    assert rt.user is None and rt.item is None
    assert rt.inter["timestamp"].tolist()[0] == 978300760.0
    assert rt.inter["item_id"].tolist() == ["10", "20", "10"]


def test_read_atomic_fields_rename(tmp_path):
    write(tmp_path / "d.inter", "userid:token\titemid:token\tlabel:float\nu1\ti1\t1\nu2\ti2\t0\n")
    write(tmp_path / "d.item", "itemid:token\tbrand:token\ni1\tacme\n")
    rt = read_atomic(tmp_path, "d", fields={"user_id": "userid", "item_id": {"name": "itemid"}})
    assert list(rt.inter.columns) == ["user_id", "item_id", "label"]
    assert rt.inter["label"].tolist() == [1.0, 0.0]
    assert list(rt.item.columns) == ["item_id", "brand"]
    assert rt.field_types["user_id"] == "token"


# ---------------------------------------------------------------- MovieLens raw


def make_ml100k(folder):
    write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    write(folder / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    flags_toy = "|".join(["0", "0", "0", "1", "1", "1"] + ["0"] * 13)
    flags_cafe = "|".join(["0"] * 8 + ["1"] + ["0"] * 10)
    write(folder / "u.item",
          f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{flags_toy}\n"
          f"2|Café au lait (1993)|01-Jan-1993||http://us.imdb.com/x|{flags_cafe}\n",
          encoding="latin-1")


def test_read_ml100k(tmp_path):
    make_ml100k(tmp_path)
    rt = read_movielens(tmp_path, "ml-100k")
    assert rt.inter["user_id"].tolist() == ["196", "186", "22"]
    assert rt.inter["item_id"].tolist() == ["242", "302", "377"]
    assert rt.inter["rating"].tolist() == [3.0, 3.0, 1.0]
    assert rt.inter["timestamp"].tolist() == [881250949.0, 891717742.0, 878887116.0]
    assert list(rt.user.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert rt.user["occupation"].tolist() == ["technician", "other"]
    assert list(rt.item.columns) == ["item_id", "movie_title", "release_date", "genre"]
    assert rt.item["movie_title"].tolist() == ["Toy Story (1995)", "Café au lait (1993)"]
    assert rt.item["genre"].tolist() == ["Animation Children's Comedy", "Drama"]
    assert rt.field_types["genre"] == "token_seq"
    assert rt.field_types["rating"] == "float"


def make_ml1m(folder, ratings=None):
    write(folder / "ratings.dat", ratings or "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    write(folder / "movies.dat",
          "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
          "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
          "3::Déjà Vu (1997)::Drama|Romance\n",
          encoding="latin-1")


def test_read_ml1m(tmp_path):
    make_ml1m(tmp_path)
    rt = read_movielens(tmp_path, "ml-1m")
    assert rt.inter["user_id"].tolist() == ["1", "1", "2"]
    assert rt.inter["item_id"].tolist() == ["1193", "661", "1193"]
    assert rt.inter["rating"].tolist() == [5.0, 3.0, 4.0]
    assert rt.inter["timestamp"].tolist() == [978300760.0, 978302109.0, 978298413.0]
    assert list(rt.user.columns) == ["user_id", "gender", "age", "occupation", "zip_code"]
    assert rt.user["zip_code"].tolist() == ["48067", "70072"]
    assert rt.item["movie_title"].tolist()[2] == "Déjà Vu (1997)"
    assert rt.item["genre"].tolist() == ["Drama", "Animation Children's Musical", "Drama Romance"]
    assert rt.field_types["genre"] == "token_seq"


def test_ml1m_bad_rating_line_number_after_blank_line(tmp_path):
    make_ml1m(tmp_path, "1::1193::5::978300760\n\n1::661::abc::978302109\n")
    with pytest.raises(DataError) as ei:
        read_movielens(tmp_path, "ml-1m")
    assert message(ei) == f"{tmp_path / 'ratings.dat'}:3: field 'rating': expected float, got 'abc'"
    assert ei.value.line == 3 and ei.value.field == "rating"


def test_ml1m_wrong_field_count(tmp_path):
    make_ml1m(tmp_path, "1::1193::5::978300760\n\n\n1::661::3\n")
    with pytest.raises(DataError) as ei:
        read_movielens(tmp_path, "ml-1m")
    assert message(ei) == f"{tmp_path / 'ratings.dat'}:4: expected 4 fields, got 3"


# ---------------------------------------------------------------- csv


def test_read_table_header_mapping_and_quotes(tmp_path):
    path = write(tmp_path / "r.csv",
                 'userId,movieId,rating,timestamp,title\n'
                 '1,31,2.5,1260759144,"American President, The (1995)"\n'
                 '1,1029,3,1260759179,Dumbo\n')
    df = read_table(path, ",", {"user_id": "userId", "item_id": {"name": "movieId", "type": "token"},
                                "rating": "rating", "title": {"name": 4}})
    assert list(df.columns) == ["user_id", "item_id", "rating", "title"]
    assert df["item_id"].tolist() == ["31", "1029"]
    assert df["rating"].tolist() == [2.5, 3.0]
    assert df["title"].tolist() == ["American President, The (1995)", "Dumbo"]
    assert df.attrs["field_types"] == {"user_id": "token", "item_id": "token",
                                       "rating": "float", "title": "token"}


def test_read_table_headerless_indices_and_multichar_sep(tmp_path):
    path = write(tmp_path / "r.dat", "7::8::4::100\n9::8::2::101\n")
    df = read_table(path, "::", {"user_id": 0, "item_id": 1, "rating": 2}, header=False)
    assert df["user_id"].tolist() == ["7", "9"]
    assert df["rating"].tolist() == [4.0, 2.0]
    with pytest.raises(DataError, match="header: false needs 0-based column indices"):
        read_table(path, "::", {"user_id": "uid"}, header=False)
    comma = write(tmp_path / "r.csv", '\n1,"a, b",3\n2,c,4\n')
    df = read_table(comma, ",", {"user_id": 0, "item_id": 1, "timestamp": 2}, header=False)
    assert df["item_id"].tolist() == ["a, b", "c"]
    assert df["timestamp"].tolist() == [3.0, 4.0]


def test_read_table_all_columns_and_missing_column(tmp_path):
    path = write(tmp_path / "r.tsv", "user_id\titem_id\tclicked\nu\ti\t1\n")
    df = read_table(path, "\t")
    assert df.attrs["field_types"] == {"user_id": "token", "item_id": "token", "clicked": "token"}
    with pytest.raises(DataError) as ei:
        read_table(path, "\t", {"rating": "stars"})
    assert message(ei) == f"{path}:1: field 'rating': column 'stars' not found (found columns: user_id, item_id, clicked)"


def test_read_table_quoted_value_spanning_lines_error_line(tmp_path):
    path = write(tmp_path / "q.csv", 'user_id,item_id,rating,note\n1,2,3,"two\nlines"\n\n1,3,x,ok\n')
    with pytest.raises(DataError) as ei:
        read_table(path)
    assert message(ei) == f"{path}:5: field 'rating': expected float, got 'x'"


# ---------------------------------------------------------------- read_dataset


def test_read_dataset_auto_dispatch(tmp_path):
    write(tmp_path / "a" / "a.inter", ATOMIC_INTER)
    make_ml1m(tmp_path / "b")
    make_ml100k(tmp_path / "c")
    assert detect_format(tmp_path / "a", "a") == "atomic"
    assert len(read_dataset(tmp_path, {"name": "a", "format": "auto"}).inter) == 3
    assert read_dataset(tmp_path, {"name": "b"}).item["genre"].iloc[0] == "Drama"
    assert read_dataset(tmp_path, {"name": "c", "format": "auto"}).inter["user_id"].iloc[0] == "196"
    assert read_dataset(tmp_path, {"name": "b", "format": "ml-1m"}).inter.shape == (3, 4)
    with pytest.raises(DataError) as ei:
        read_dataset(tmp_path, {"name": "missing"})
    assert "expected missing.inter (RecBole atomic), ratings.dat (GroupLens ml-1m) or u.data" in message(ei)
    with pytest.raises(DataError, match="unknown format 'parquet'"):
        read_dataset(tmp_path, {"name": "a", "format": "parquet"})


def test_read_dataset_csv(tmp_path):
    write(tmp_path / "shop" / "clicks.csv", "uid,iid,ts\nu1,i1,5\nu2,i1,6\n")
    write(tmp_path / "shop" / "items.csv", "iid,price\ni1,9.5\n")
    spec = {"name": "shop", "format": "csv", "sep": ",", "header": True,
            "files": {"inter": "clicks.csv", "item": "items.csv"},
            "fields": {"user_id": "uid", "item_id": "iid", "timestamp": "ts"}}
    rt = read_dataset(tmp_path, spec)
    assert list(rt.inter.columns) == ["user_id", "item_id", "timestamp"]
    assert rt.inter["timestamp"].tolist() == [5.0, 6.0]
    assert list(rt.item.columns) == ["item_id", "price"]
    assert rt.user is None
    per_file = dict(spec, fields={"inter": {"user_id": "uid", "item_id": "iid"},
                                  "item": {"item_id": "iid", "price": {"name": "price", "type": "float"}}})
    rt = read_dataset(tmp_path, per_file)
    assert list(rt.inter.columns) == ["user_id", "item_id"]
    assert rt.item["price"].tolist() == [9.5]
    with pytest.raises(DataError) as ei:
        read_dataset(tmp_path, dict(spec, fields=None))
    assert message(ei) == (f"{tmp_path / 'shop' / 'clicks.csv'}:1: field 'user_id': "
                           "missing required column (found columns: uid, iid, ts)")


# ---------------------------------------------------------------- bad input, one test per kind


def test_wrong_field_count_after_blank_line(tmp_path):
    path = write(tmp_path / "ml.inter", ATOMIC_INTER + "\n2\t20\t4\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}:6: expected 4 fields, got 3"


def test_too_many_fields(tmp_path):
    path = write(tmp_path / "u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n")
    with pytest.raises(DataError) as ei:
        read_movielens(tmp_path, "ml-100k")
    assert message(ei) == f"{path}:2: expected 4 fields, got 5"


def test_non_numeric_float_after_blank_line(tmp_path):
    path = write(tmp_path / "ml.inter", ATOMIC_INTER + "\n3\t30\tabc\t978300763\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}:6: field 'rating': expected float, got 'abc'"


def test_non_numeric_timestamp_reports_first_bad_row(tmp_path):
    path = write(tmp_path / "ml.inter", ATOMIC_INTER + "\n3\t30\t1\tsoon\n4\t40\tbad\t1\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}:6: field 'timestamp': expected float, got 'soon'"


def test_empty_file(tmp_path):
    path = write(tmp_path / "ml.inter", "")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}: empty file: no header line"
    raw = write(tmp_path / "ratings.dat", "\n\n")
    with pytest.raises(DataError) as ei:
        read_movielens(tmp_path, "ml-1m")
    assert message(ei) == f"{raw}: empty file: no data rows"


def test_header_without_rows(tmp_path):
    path = write(tmp_path / "ml.inter", "user_id:token\titem_id:token\n\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}:1: no data rows after the header"


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "nothere")
    assert message(ei) == f"{tmp_path / 'nothere.inter'}: file not found"


def test_missing_required_column(tmp_path):
    path = write(tmp_path / "ml.inter", "userid:token\titem_id:token\trating:float\n1\t2\t3\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == (f"{path}:1: field 'user_id': missing required column "
                           "(found columns: userid, item_id, rating); "
                           "map your column names with data.fields, e.g. {user_id: userid}")


def test_empty_and_nan_rating(tmp_path):
    path = write(tmp_path / "ml.inter", ATOMIC_INTER + "\n3\t30\t\t978300763\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}:6: field 'rating': empty value"
    write(tmp_path / "ml.inter", ATOMIC_INTER + "3\t30\tNaN\t978300763\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}:5: field 'rating': NaN value, a number is required"


def test_empty_label_and_empty_user_id(tmp_path):
    path = write(tmp_path / "d.inter", "user_id:token\titem_id:token\tlabel:float\n1\t2\t1\n\n1\t3\t \n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "d")
    assert message(ei) == f"{path}:4: field 'label': empty value"
    write(tmp_path / "d.inter", "user_id:token\titem_id:token\n1\t2\n\t3\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "d")
    assert message(ei) == f"{path}:3: field 'user_id': empty value"


def test_empty_optional_float_is_nan(tmp_path):
    write(tmp_path / "d.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t\n1\t3\t 7 \n")
    rt = read_atomic(tmp_path, "d")
    assert np.isnan(rt.inter["timestamp"].iloc[0]) and rt.inter["timestamp"].iloc[1] == 7.0


def test_duplicate_header_field(tmp_path):
    path = write(tmp_path / "ml.inter", "user_id:token\titem_id:token\tuser_id:token\n1\t2\t3\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}:1: field 'user_id': duplicate header field"
    csv_path = write(tmp_path / "r.csv", "a,b,a\n1,2,3\n")
    with pytest.raises(DataError) as ei:
        read_table(csv_path)
    assert message(ei) == f"{csv_path}:1: field 'a': duplicate header field"


def test_unknown_atomic_type(tmp_path):
    path = write(tmp_path / "ml.inter", "user_id:token\titem_id:token\trating:double\n1\t2\t3\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == (f"{path}:1: field 'rating': unknown type 'double', "
                           "expected one of token, float, token_seq, float_seq")


def test_header_line_number_after_leading_blank_lines(tmp_path):
    path = write(tmp_path / "ml.inter", "\n\n" + ATOMIC_INTER + "5\t6\t1\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == f"{path}:7: expected 4 fields, got 3"


# ---------------------------------------------------------------- on_bad_line="skip"


def test_skip_counts_and_logs(tmp_path, caplog):
    write(tmp_path / "ml.inter",
          ATOMIC_INTER
          + "\n"
          + "4\t40\n"                   # wrong field count
          + "5\t50\tabc\t1\n"           # unparsable float
          + "6\t60\t\t1\n"              # empty rating
          + "\t70\t2\t1\n"              # empty user_id
          + "7\t70\t2\t1\t9\n"          # too many fields
          + "8\t80\t1\t\n")             # empty timestamp: fine
    with caplog.at_level(logging.WARNING, logger="recstudio_edge.data.readers"):
        rt = read_atomic(tmp_path, "ml", on_bad_line="skip")
    assert rt.skipped == 5
    assert rt.inter["user_id"].tolist() == ["1", "1", "2", "8"]
    assert "skipped 5 malformed rows" in caplog.text


def test_skip_movielens_and_dataset(tmp_path):
    make_ml1m(tmp_path / "ml-1m", "1::2::3::4\n1::2\nx::y::z::w\n2::3::4::5\n")
    rt = read_dataset(tmp_path, {"name": "ml-1m", "on_bad_line": "skip"})
    assert rt.skipped == 2
    assert rt.inter["user_id"].tolist() == ["1", "2"]
    with pytest.raises(ValueError, match="on_bad_line"):
        read_dataset(tmp_path, {"name": "ml-1m", "on_bad_line": "ignore"})


def test_header_field_without_type(tmp_path):
    path = write(tmp_path / "ml.inter", "user_id:token\titem_id\n1\t2\n")
    with pytest.raises(DataError) as ei:
        read_atomic(tmp_path, "ml")
    assert message(ei) == (f"{path}:1: field 'item_id': missing type in header, expected 'name:type' "
                           "with type one of token, float, token_seq, float_seq")


def test_latin1_atomic_file_falls_back(tmp_path, caplog):
    write(tmp_path / "ml.inter", ATOMIC_INTER)
    write(tmp_path / "ml.item", "item_id:token\tmovie_title:token_seq\n10\tCafé\n", encoding="latin-1")
    with caplog.at_level(logging.WARNING, logger="recstudio_edge.data.readers"):
        rt = read_atomic(tmp_path, "ml")
    assert rt.item["movie_title"].tolist() == ["Café"]
    assert "not valid UTF-8" in caplog.text
