"""Fast, strict readers for recommendation data files.

Every reader returns a :class:`RawTables` with standardised column names:

* the interaction table always has ``user_id`` and ``item_id`` (token fields,
  kept as **strings**: the caller factorises them), optionally ``rating`` and
  ``timestamp`` (float64) and any other fields of the file;
* the user table has ``user_id`` plus features, the item table ``item_id``
  plus features.

Field types are those of RecBole atomic files: ``token`` (string), ``float``
(float64, empty -> NaN), ``token_seq`` and ``float_seq``.  Sequence fields are
kept as **one space-separated string per row** (exactly the text of the atomic
file, e.g. ``"Animation Children's Comedy"``); split them with
``series.str.split(" ")`` when needed.  Raw GroupLens genre lists are converted
to the same space-separated form.

Parsing runs in pyarrow (multi-threaded C++); there is no Python loop over the
lines of a file on the fast path.  Multi-character separators such as ``::``
are replaced by a single unused byte before parsing.  Only when parsing or
validation fails is the first offending row located (vectorised with numpy)
and reported as a :class:`~recstudio_edge.data.errors.DataError` naming the
file, the 1-based physical line number (blank lines and the header count) and
the field::

    ratings.dat:17: field 'rating': expected float, got 'abc'

With ``on_bad_line="skip"`` malformed rows (wrong number of fields,
unparsable numbers, empty ``user_id``/``item_id``/``rating``/``label``) are
dropped instead, counted in ``RawTables.skipped`` and logged as a warning.
Structural problems (empty file, bad header, missing required column) always
raise.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .errors import DataError

__all__ = [
    "FIELD_TYPES",
    "RawTables",
    "read_atomic",
    "read_movielens",
    "read_table",
    "read_dataset",
    "detect_format",
]

logger = logging.getLogger(__name__)

FIELD_TYPES = ("token", "float", "token_seq", "float_seq")
MAX_ID_CHARS = 256  # the longest token an id field (``*_id``) may hold
FORMATS = ("atomic", "ml-100k", "ml-1m", "csv", "auto")
ON_BAD_LINE = ("error", "skip")
# Columns whose empty / NaN values make a row unusable.
REQUIRED_VALUES = ("user_id", "item_id", "rating", "label")
# Default type of a column when a plain CSV does not say.
_FLOAT_NAMES = frozenset({"rating", "timestamp", "label"})
# Bytes used to stand in for a multi-character separator such as "::".
_SEP_CANDIDATES = (b"\x1f", b"\x1e", b"\x1d", b"\x1c", b"\x01", b"\x02")
_NONSPACE = re.compile(rb"\S")
# What counts as a float: decimal with optional exponent, inf/infinity, nan.
_FLOAT_RE = r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)$"

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


@dataclass
class RawTables:
    """Parsed tables of one dataset, with standardised column names.

    Attributes:
        inter: interactions; ``user_id``/``item_id`` strings, ``rating`` and
            ``timestamp`` float64 when present, plus any other fields.
        user: user features keyed by ``user_id`` (``None`` if no user file).
        item: item features keyed by ``item_id`` (``None`` if no item file).
        field_types: column name -> one of :data:`FIELD_TYPES`, for the
            columns of all three tables.
        skipped: number of malformed rows dropped (``on_bad_line="skip"``).
    """

    inter: pd.DataFrame
    user: pd.DataFrame | None = None
    item: pd.DataFrame | None = None
    field_types: dict[str, str] = field(default_factory=dict)
    skipped: int = 0


# --------------------------------------------------------------------------
# Low level: bytes -> normalised text -> string table -> typed DataFrame
# --------------------------------------------------------------------------


@dataclass
class _Text:
    """A file's data lines, normalised for pyarrow.

    ``body`` is UTF-8 with a one-byte separator; ``first_line`` is the
    physical line number of its first line in the original file.
    """

    path: Path
    body: bytes
    first_line: int
    sep: bytes
    quoted: bool


def _check_on_bad_line(on_bad_line: str) -> None:
    """Reject an unknown ``on_bad_line`` policy."""
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line must be one of {', '.join(ON_BAD_LINE)}, got {on_bad_line!r}")


def _read_bytes(path: Path, encoding: str) -> bytes:
    """Read ``path`` and return its content as UTF-8 bytes (BOM removed).

    UTF-8 files that are not valid UTF-8 are decoded as latin-1 with a
    warning (older MovieLens-derived files are latin-1).
    """
    if not path.is_file():
        raise DataError(path, message="file not found")
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    if codecs.lookup(encoding).name == "utf-8":
        try:
            raw.decode("utf-8")
            return raw
        except UnicodeDecodeError:
            logger.warning("%s: not valid UTF-8, reading it as latin-1", path)
            encoding = "latin-1"
    return raw.decode(encoding).encode("utf-8")


def _one_byte_sep(raw: bytes, sep: str) -> tuple[bytes, bytes]:
    """Return ``(raw, sep_byte)`` with a multi-byte ``sep`` replaced by one free byte."""
    sep_b = sep.encode("utf-8")
    if len(sep_b) == 1:
        return raw, sep_b
    for cand in _SEP_CANDIDATES:
        if cand not in raw:
            return raw.replace(sep_b, cand), cand
    raise ValueError(f"cannot find a free byte to stand for separator {sep!r}")


def _split_header(raw: bytes, path: Path) -> tuple[str, int, bytes]:
    """Split off the first non-blank line: ``(header_text, header_line, rest)``."""
    m = _NONSPACE.search(raw)
    if m is None:
        raise DataError(path, message="empty file: no header line")
    start = raw.rfind(b"\n", 0, m.start()) + 1
    end = raw.find(b"\n", start)
    end = len(raw) if end < 0 else end
    header_line = raw.count(b"\n", 0, start) + 1
    header = raw[start:end].decode("utf-8").rstrip("\r")
    return header, header_line, raw[end + 1:]


def _load_text(path, sep: str, encoding: str, header: bool, quoted: bool):
    """Load a file: ``(_Text, header_text | None, header_line | None)``.

    Raises :class:`DataError` for an empty file or a file with a header but
    no data rows.
    """
    path = Path(path)
    raw = _read_bytes(path, encoding)
    raw, sep_b = _one_byte_sep(raw, sep)
    header_text = header_line = None
    first_line = 1
    if header:
        header_text, header_line, raw = _split_header(raw, path)
        first_line = header_line + 1
        if _NONSPACE.search(raw) is None:
            raise DataError(path, header_line, None, "no data rows after the header")
    elif _NONSPACE.search(raw) is None:
        raise DataError(path, message="empty file: no data rows")
    return _Text(path, raw, first_line, sep_b, quoted), header_text, header_line


def _split_fields(text: _Text, line: str) -> list[str]:
    """Split one header line into stripped field names."""
    sep = text.sep.decode("utf-8")
    if text.quoted:
        parts = next(csv.reader([line], delimiter=sep))
    else:
        parts = line.split(sep)
    return [p.strip() for p in parts]


def _row_lines(text: _Text) -> tuple[np.ndarray, np.ndarray]:
    """Physical line number and field count of every data row of ``text``.

    Blank lines are not rows (pyarrow ignores them), so row ``i`` of the
    parsed table sits on ``lines[i]``.  Vectorised with numpy for unquoted
    files; quoted CSV (rare, error path only) goes through :mod:`csv`.
    """
    if text.quoted:
        return _row_lines_quoted(text)
    arr = np.frombuffer(text.body, dtype=np.uint8)
    if arr.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [arr.size]))
    has_cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
    nonblank = (ends - has_cr) > starts
    seps = np.flatnonzero(arr == text.sep[0])
    counts = np.bincount(np.searchsorted(nl, seps), minlength=starts.size) + 1
    lines = np.flatnonzero(nonblank) + text.first_line
    return lines, counts[nonblank]


def _first_row_width(text: _Text) -> int:
    """Number of fields in the first non-blank line of ``text``."""
    m = _NONSPACE.search(text.body)
    start = text.body.rfind(b"\n", 0, m.start()) + 1
    end = text.body.find(b"\n", start)
    line = text.body[start:end if end >= 0 else len(text.body)].decode("utf-8").rstrip("\r")
    return len(_split_fields(text, line))


def _row_lines_quoted(text: _Text) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_row_lines` for quoted CSV, where a value may span lines."""
    reader = csv.reader(io.StringIO(text.body.decode("utf-8"), newline=""),
                        delimiter=text.sep.decode("utf-8"))
    lines, counts, prev_end = [], [], 0
    for record in reader:
        if record:
            lines.append(text.first_line + prev_end)
            counts.append(len(record))
        prev_end = reader.line_num
    return np.asarray(lines, np.int64), np.asarray(counts, np.int64)


def _parse_strings(text: _Text, names: list[str], on_bad_line: str) -> tuple[pa.Table, int]:
    """Parse ``text`` into a table of string columns: ``(table, n_skipped)``.

    A row with the wrong number of fields raises :class:`DataError`, or is
    skipped and counted when ``on_bad_line="skip"``.
    """
    bad_rows: list[int] = []

    def skip_row(row) -> str:
        bad_rows.append(1)
        return "skip"

    parse = pacsv.ParseOptions(
        delimiter=text.sep.decode("utf-8"),
        quote_char='"' if text.quoted else False,
        newlines_in_values=text.quoted,
        invalid_row_handler=skip_row if on_bad_line == "skip" else None,
    )
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        table = pacsv.read_csv(
            io.BytesIO(text.body),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=parse,
            convert_options=convert,
        )
    except pa.ArrowInvalid as exc:
        _raise_field_count(text, len(names), exc)
    return table, len(bad_rows)


def _raise_field_count(text: _Text, expected: int, exc: Exception):
    """Locate the first row with the wrong number of fields and raise."""
    lines, counts = _row_lines(text)
    bad = np.flatnonzero(counts != expected)
    if bad.size:
        i = bad[0]
        raise DataError(text.path, int(lines[i]), None,
                        f"expected {expected} fields, got {int(counts[i])}") from None
    raise DataError(text.path, message=f"cannot parse: {exc}") from None


def _to_float(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Convert a string column to float64.

    Returns ``(values, unparsable, empty)``: values with NaN for empty cells,
    a mask of non-empty cells that are not numbers (``None`` when all
    parsed), and the mask of empty cells.
    """
    try:  # fast path: every cell is a plain number
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float64), None, np.zeros(len(col), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    trimmed = pc.utf8_trim_whitespace(col)
    empty_a = pc.equal(trimmed, "")
    empty = np.asarray(empty_a.to_numpy(zero_copy_only=False), dtype=bool)
    nullable = pc.if_else(empty_a, pa.scalar(None, pa.string()), trimmed)
    try:
        values = pc.cast(nullable, pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float64), None, empty
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Error path: a vectorised (RE2) number pattern marks the garbage, the rest is cast.
    number = pc.match_substring_regex(trimmed, _FLOAT_RE, ignore_case=True)
    unparsable = np.asarray(pc.invert(pc.or_(number, empty_a)).to_numpy(zero_copy_only=False), dtype=bool)
    try:
        values = pc.cast(pc.if_else(number, trimmed, pa.scalar(None, pa.string())), pa.float64())
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64), unparsable, empty
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Last resort (pattern and arrow disagree): pandas coerce.
    objs = np.asarray(nullable.to_numpy(zero_copy_only=False), dtype=object)
    values = pd.to_numeric(pd.Series(objs, dtype=object), errors="coerce").to_numpy(np.float64)
    lower = pc.utf8_lower(trimmed)
    nan_lit = np.asarray(pc.is_in(lower, value_set=pa.array(["nan", "+nan", "-nan"]))
                         .to_numpy(zero_copy_only=False), dtype=bool)
    return values, np.isnan(values) & ~empty & ~nan_lit, empty


@dataclass
class _Problem:
    """The first bad cell found in one column."""

    row: int
    field: str
    message: str


def _first(mask: np.ndarray) -> int | None:
    """Index of the first True in ``mask``, or None."""
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def _convert(text: _Text, table: pa.Table, columns: list[tuple[str, str, str]],
             required: tuple[str, ...], on_bad_line: str) -> tuple[pd.DataFrame, int]:
    """Type and validate string columns; return ``(frame, n_skipped)``.

    ``columns`` lists ``(file_column, output_name, type)``.  Float columns
    become float64; token and sequence columns stay strings.  Output names in
    ``required`` must not be empty (nor NaN for floats).
    """
    out: dict[str, Any] = {}
    bad = np.zeros(table.num_rows, dtype=bool)
    problems: list[_Problem] = []
    for src, name, ftype in columns:
        col = table[src]
        if ftype == "float":
            values, unparsable, empty = _to_float(col)
            out[name] = pa.array(values, type=pa.float64())
            if unparsable is not None and unparsable.any():
                bad |= unparsable
                r = _first(unparsable)
                raw = col[r].as_py().strip()
                problems.append(_Problem(r, name, f"expected float, got '{raw}'"))
            if name in required:
                missing = np.isnan(values)
                if unparsable is not None:
                    missing &= ~unparsable
                if missing.any():
                    bad |= missing
                    r = _first(missing)
                    what = "empty value" if empty[r] else "NaN value, a number is required"
                    problems.append(_Problem(r, name, what))
        else:
            out[name] = col
            if name.endswith("_id"):  # an id is a short token: a 200,000-digit cell is garbage, not a user
                too_long = np.asarray(pc.greater(pc.utf8_length(col), MAX_ID_CHARS)
                                      .to_numpy(zero_copy_only=False), dtype=bool)
                if too_long.any():
                    bad |= too_long
                    r = _first(too_long)
                    problems.append(_Problem(r, name, f"id of {len(col[r].as_py())} characters, at most "
                                                      f"{MAX_ID_CHARS} allowed"))
                control = np.asarray(pc.match_substring_regex(col, r"[\x00-\x1f\x7f]")
                                     .to_numpy(zero_copy_only=False), dtype=bool)
                if control.any():  # raw bytes of a binary file, not an id (shown escaped)
                    bad |= control
                    r = _first(control)
                    problems.append(_Problem(r, name, f"id {col[r].as_py()!r} holds control characters "
                                                      f"(a binary file?)"))
            if name in required:
                empty = np.asarray(pc.equal(pc.utf8_trim_whitespace(col), "")
                                   .to_numpy(zero_copy_only=False), dtype=bool)
                if empty.any():
                    bad |= empty
                    problems.append(_Problem(_first(empty), name, "empty value"))
    result = pa.table(out)
    n_bad = int(bad.sum())
    if n_bad and on_bad_line == "error":
        p = min(problems, key=lambda q: q.row)
        lines, _ = _row_lines(text)
        raise DataError(text.path, int(lines[p.row]), p.field, p.message)
    if n_bad:
        result = result.filter(pa.array(~bad))
    return result.to_pandas(), n_bad


def _log_skipped(path: Path, n: int) -> None:
    """Warn once per file about dropped rows."""
    if n:
        logger.warning("%s: skipped %d malformed row%s (on_bad_line=skip)", path, n, "" if n == 1 else "s")


def _check_duplicates(path: Path, line: int | None, names: list[str]) -> None:
    """Raise on a repeated header field."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise DataError(path, line, n, "duplicate header field")
        seen.add(n)


def _require_columns(path: Path, line: int | None, names: list[str], required: tuple[str, ...],
                     hint: str = "") -> None:
    """Raise when a required column (``user_id``/``item_id``) is missing."""
    for req in required:
        if req not in names:
            found = ", ".join(names) if names else "none"
            raise DataError(path, line, req, f"missing required column (found columns: {found}){hint}")


def _guess_type(name: str) -> str:
    """Default type of a column a plain CSV does not type."""
    return "float" if name in _FLOAT_NAMES else "token"


# --------------------------------------------------------------------------
# RecBole atomic files
# --------------------------------------------------------------------------


def _parse_atomic_header(text: _Text, header: str, line: int) -> tuple[list[str], list[str]]:
    """Parse ``name:type`` header fields: ``(names, types)``."""
    names, types = [], []
    for part in _split_fields(text, header):
        name, colon, ftype = part.rpartition(":")
        if not colon or not name:
            raise DataError(text.path, line, part or "''",
                            "missing type in header, expected 'name:type' with type one of "
                            + ", ".join(FIELD_TYPES))
        if ftype not in FIELD_TYPES:
            raise DataError(text.path, line, name,
                            f"unknown type '{ftype}', expected one of {', '.join(FIELD_TYPES)}")
        names.append(name)
        types.append(ftype)
    _check_duplicates(text.path, line, names)
    return names, types


def _rename_map(fields: Mapping[str, Any] | None) -> dict[str, str]:
    """``{standard: file_name}`` (or ``{standard: {"name": file_name}}``) -> ``{file_name: standard}``."""
    out: dict[str, str] = {}
    for std, spec in (fields or {}).items():
        src = spec.get("name") if isinstance(spec, Mapping) else spec
        if src is not None and src != std:
            out[str(src)] = std
    return out


def _read_atomic_file(path: Path, fields, required_cols: tuple[str, ...],
                      on_bad_line: str, encoding: str):
    """Read one atomic file: ``(frame, {name: type}, n_skipped)``."""
    text, header, line = _load_text(path, "\t", encoding, header=True, quoted=False)
    names, types = _parse_atomic_header(text, header, line)
    rename = _rename_map(fields)
    out_names = [rename.get(n, n) for n in names]
    _check_duplicates(text.path, line, out_names)
    hint = "; map your column names with data.fields, e.g. {user_id: userid}" if required_cols else ""
    _require_columns(text.path, line, out_names, required_cols, hint)
    table, skipped = _parse_strings(text, names, on_bad_line)
    cols = list(zip(names, out_names, types))
    frame, n_bad = _convert(text, table, cols, REQUIRED_VALUES, on_bad_line)
    _log_skipped(text.path, skipped + n_bad)
    return frame, dict(zip(out_names, types)), skipped + n_bad


def read_atomic(directory, name: str, on_bad_line: str = "error",
                fields: Mapping[str, Any] | None = None, encoding: str = "utf-8") -> RawTables:
    """Read RecBole/RecStudio atomic files ``<name>.inter`` (+ ``.user``, ``.item``).

    Files are tab-separated with a typed header ``field:type`` where type is
    one of ``token, float, token_seq, float_seq``.  ``fields`` renames file
    fields to standard names, ``{standard_name: file_name}``, e.g.
    ``{"user_id": "userid"}``; it applies to all three files.  The ``.user``
    and ``.item`` files are optional.

    Raises:
        DataError: missing/empty file, bad header, missing ``user_id`` or
            ``item_id``, or (with ``on_bad_line="error"``) a malformed row.
    """
    _check_on_bad_line(on_bad_line)
    directory = Path(directory)
    inter, types, skipped = _read_atomic_file(
        directory / f"{name}.inter", fields, ("user_id", "item_id"), on_bad_line, encoding)
    tables: dict[str, pd.DataFrame | None] = {"user": None, "item": None}
    for kind, key in (("user", "user_id"), ("item", "item_id")):
        path = directory / f"{name}.{kind}"
        if path.is_file():
            frame, t, n = _read_atomic_file(path, fields, (key,), on_bad_line, encoding)
            tables[kind] = frame
            types = {**t, **types}
            skipped += n
    return RawTables(inter, tables["user"], tables["item"], types, skipped)


# --------------------------------------------------------------------------
# Raw GroupLens MovieLens files
# --------------------------------------------------------------------------


def _read_fixed(path: Path, sep: str, columns: list[tuple[str, str]], on_bad_line: str,
                encoding: str = "utf-8"):
    """Read a headerless file with known ``(name, type)`` columns."""
    text, _, _ = _load_text(path, sep, encoding, header=False, quoted=False)
    names = [n for n, _ in columns]
    table, skipped = _parse_strings(text, names, on_bad_line)
    frame, n_bad = _convert(text, table, [(n, n, t) for n, t in columns], REQUIRED_VALUES, on_bad_line)
    _log_skipped(text.path, skipped + n_bad)
    return frame, skipped + n_bad


_INTER_COLS = [("user_id", "token"), ("item_id", "token"), ("rating", "float"), ("timestamp", "float")]
_ML100K_USER = [("user_id", "token"), ("age", "token"), ("gender", "token"),
                ("occupation", "token"), ("zip_code", "token")]
_ML100K_ITEM = ([("item_id", "token"), ("movie_title", "token"), ("release_date", "token"),
                 ("video_release_date", "token"), ("imdb_url", "token")]
                + [(f"_genre{i}", "float") for i in range(len(ML100K_GENRES))])
_ML1M_USER = [("user_id", "token"), ("gender", "token"), ("age", "token"),
              ("occupation", "token"), ("zip_code", "token")]
_ML1M_ITEM = [("item_id", "token"), ("movie_title", "token"), ("genre", "token")]

_MOVIELENS_FILES = {
    "ml-100k": ("u.data", "\t", "u.user", "|", "u.item", "|"),
    "ml-1m": ("ratings.dat", "::", "users.dat", "::", "movies.dat", "::"),
}


def _ml100k_genres(item: pd.DataFrame) -> pd.DataFrame:
    """Replace the 19 genre flag columns of ``u.item`` by a ``genre`` token_seq."""
    flag_cols = [f"_genre{i}" for i in range(len(ML100K_GENRES))]
    genre = pd.Series("", index=item.index, dtype=object)
    for col, g in zip(flag_cols, ML100K_GENRES):
        genre = genre + np.where(item[col].to_numpy() == 1.0, g + " ", "")
    item = item.drop(columns=flag_cols + ["video_release_date", "imdb_url"])
    item["genre"] = genre.str.rstrip(" ").astype(item["movie_title"].dtype)
    return item


def read_movielens(directory, variant: str, on_bad_line: str = "error") -> RawTables:
    """Read raw GroupLens MovieLens files from ``directory``.

    ``variant="ml-100k"``: ``u.data`` (tab: user item rating timestamp),
    ``u.user`` (``|``: user_id age gender occupation zip_code) and ``u.item``
    (``|``, latin-1).  The item table keeps ``item_id, movie_title,
    release_date`` and turns the 19 genre flags into ``genre`` (token_seq);
    the always-empty video release date and the IMDb URL are dropped.

    ``variant="ml-1m"``: ``ratings.dat``, ``users.dat`` (user_id gender age
    occupation zip_code) and ``movies.dat`` (latin-1; item_id movie_title
    genre), all ``::``-separated; ``|``-joined genres become a space-separated
    token_seq.

    User and item files are optional; the rating file is required.
    """
    _check_on_bad_line(on_bad_line)
    if variant not in _MOVIELENS_FILES:
        raise DataError(None, None, "format", f"unknown MovieLens variant '{variant}', "
                        f"expected one of {', '.join(_MOVIELENS_FILES)}")
    directory = Path(directory)
    inter_f, inter_sep, user_f, user_sep, item_f, item_sep = _MOVIELENS_FILES[variant]
    inter, skipped = _read_fixed(directory / inter_f, inter_sep, _INTER_COLS, on_bad_line)
    types = dict(_INTER_COLS)
    user = item = None
    user_cols = _ML100K_USER if variant == "ml-100k" else _ML1M_USER
    if (directory / user_f).is_file():
        user, n = _read_fixed(directory / user_f, user_sep, user_cols, on_bad_line)
        skipped += n
        types.update(user_cols)
    item_cols = _ML100K_ITEM if variant == "ml-100k" else _ML1M_ITEM
    if (directory / item_f).is_file():
        item, n = _read_fixed(directory / item_f, item_sep, item_cols, on_bad_line, "latin-1")
        skipped += n
        if variant == "ml-100k":
            item = _ml100k_genres(item)
        else:
            item["genre"] = item["genre"].str.replace("|", " ", regex=False)
        types.update({"movie_title": "token", "genre": "token_seq"})
        if variant == "ml-100k":
            types["release_date"] = "token"
    return RawTables(inter, user, item, types, skipped)


# --------------------------------------------------------------------------
# Plain CSV / TSV described by config
# --------------------------------------------------------------------------


def _column_specs(columns) -> list[tuple[str, Any, str | None]]:
    """Normalise the ``columns`` argument to ``[(standard, source, type|None)]``.

    Accepted forms: a list of names (``source`` = the same name), or a dict
    ``{standard: source}`` / ``{standard: {"name": source, "type": t}}``
    where ``source`` is a header name or a 0-based column index.
    """
    if isinstance(columns, (list, tuple)):
        return [(str(c), c, None) for c in columns]
    specs = []
    for std, spec in columns.items():
        if isinstance(spec, Mapping):
            specs.append((str(std), spec.get("name", std), spec.get("type")))
        else:
            specs.append((str(std), std if spec is None else spec, None))
    return specs


def _resolve_columns(path: Path, line: int | None, file_names: list[str], header: bool,
                     columns, keep_unmapped: bool) -> list[tuple[str, str, str]]:
    """Map requested columns onto file columns: ``[(file_column, standard, type)]``.

    With ``columns=None`` every file column is kept under its own name.  With
    ``keep_unmapped`` the columns not mentioned are kept as well (``columns``
    then acts as a rename map).
    """
    specs = _column_specs(columns) if columns is not None else []
    out, used = [], set()
    for std, src, ftype in specs:
        if isinstance(src, int) and not isinstance(src, bool):
            if not 0 <= src < len(file_names):
                raise DataError(path, line, std, f"column index {src} out of range "
                                f"(the file has {len(file_names)} columns)")
            idx = src
        elif not header:
            raise DataError(path, None, std, f"header: false needs 0-based column indices, got '{src}'")
        elif str(src) in file_names:
            idx = file_names.index(str(src))
        elif keep_unmapped:
            continue
        else:
            raise DataError(path, line, std, f"column '{src}' not found "
                            f"(found columns: {', '.join(file_names)})")
        ftype = ftype or _guess_type(std)
        if ftype not in FIELD_TYPES:
            raise DataError(path, line, std, f"unknown type '{ftype}', expected one of {', '.join(FIELD_TYPES)}")
        out.append((file_names[idx], std, ftype))
        used.add(idx)
    if columns is None or keep_unmapped:
        out += [(n, n, _guess_type(n)) for i, n in enumerate(file_names) if i not in used]
    _check_duplicates(path, line, [std for _, std, _ in out])
    return out


def _read_table(path, sep: str, columns, header: bool, on_bad_line: str, encoding: str,
                quoted: bool | None, required_cols: tuple[str, ...] = (), keep_unmapped: bool = False):
    """Implementation of :func:`read_table`: ``(frame, {name: type}, n_skipped)``."""
    _check_on_bad_line(on_bad_line)
    quoted = (sep == ",") if quoted is None else quoted
    text, header_text, line = _load_text(path, sep, encoding, header, quoted)
    if header:
        file_names = _split_fields(text, header_text)
        _check_duplicates(text.path, line, file_names)
    else:
        file_names = [f"column_{i}" for i in range(_first_row_width(text))]
        if columns is None:
            raise DataError(text.path, None, None, "header: false needs a column mapping")
    cols = _resolve_columns(text.path, line, file_names, header, columns, keep_unmapped)
    _require_columns(text.path, line, [std for _, std, _ in cols], required_cols)
    table, skipped = _parse_strings(text, file_names, on_bad_line)
    frame, n_bad = _convert(text, table, cols, REQUIRED_VALUES, on_bad_line)
    _log_skipped(text.path, skipped + n_bad)
    return frame, {std: t for _, std, t in cols}, skipped + n_bad


def read_table(path, sep: str = ",", columns=None, header: bool = True, on_bad_line: str = "error",
               encoding: str = "utf-8", quoted: bool | None = None) -> pd.DataFrame:
    """Read a plain CSV/TSV into a DataFrame with standard column names.

    Args:
        path: the file.
        sep: field separator; may be several characters (e.g. ``"::"``).
        columns: which columns to read and how to name them:

            * ``None``: all columns, named as in the header;
            * a list of header names to keep;
            * ``{standard: source}`` or ``{standard: {"name": source,
              "type": t}}`` where ``source`` is a header name or a 0-based
              index (indices are required when ``header=False``).

            A column without a type is ``float`` if named ``rating``,
            ``timestamp`` or ``label``, else ``token``.
        header: whether the first non-blank line names the columns.
        on_bad_line: ``"error"`` or ``"skip"``.
        encoding: text encoding of the file.
        quoted: honour ``"``-quoting; default: only when ``sep == ","``.

    Returns:
        The frame; ``frame.attrs["field_types"]`` maps its columns to types
        and ``frame.attrs["skipped"]`` counts dropped rows.
    """
    frame, types, skipped = _read_table(path, sep, columns, header, on_bad_line, encoding, quoted)
    frame.attrs["field_types"] = types
    frame.attrs["skipped"] = skipped
    return frame


# --------------------------------------------------------------------------
# Dispatch on the data: section of the config
# --------------------------------------------------------------------------


def detect_format(folder, name: str) -> str:
    """Pick ``atomic``, ``ml-1m`` or ``ml-100k`` from the files in ``folder``."""
    folder = Path(folder)
    if (folder / f"{name}.inter").is_file():
        return "atomic"
    if (folder / "ratings.dat").is_file():
        return "ml-1m"
    if (folder / "u.data").is_file():
        return "ml-100k"
    raise DataError(folder, message=f"no dataset files found: expected {name}.inter (RecBole atomic), "
                    "ratings.dat (GroupLens ml-1m) or u.data (GroupLens ml-100k)")


def _csv_fields(fields, kind: str, header: bool):
    """The ``columns`` mapping and rename mode for one csv file.

    ``fields`` is either per file (``{inter: {...}, user: {...}, item:
    {...}}``, used as exact column lists) or flat (``{standard: source}``, a
    rename map applied to every file; without a header it describes the
    inter file only).  Returns ``(columns, keep_unmapped)``.
    """
    fields = fields or {}
    per_file = bool(fields) and all(
        k in ("inter", "user", "item") and isinstance(v, Mapping) and "name" not in v
        for k, v in fields.items())
    if per_file:
        return fields.get(kind), False
    if not header:
        return (fields or None) if kind == "inter" else None, False
    return (fields or None), True


def _read_csv_dataset(folder: Path, spec: Mapping[str, Any], on_bad_line: str) -> RawTables:
    """Read ``format: csv``: files named by ``spec["files"]`` inside ``folder``."""
    files = spec.get("files") or {}
    if isinstance(files, str):
        files = {"inter": files}
    if "inter" not in files:
        raise DataError(folder, None, "files", "format: csv needs files: {inter: <file>}")
    sep, header = spec.get("sep") or ",", spec.get("header", True)
    types: dict[str, str] = {}
    tables: dict[str, pd.DataFrame | None] = {"inter": None, "user": None, "item": None}
    skipped = 0
    required = {"inter": ("user_id", "item_id"), "user": ("user_id",), "item": ("item_id",)}
    for kind in ("inter", "user", "item"):
        if not files.get(kind):
            continue
        columns, keep = _csv_fields(spec.get("fields"), kind, header)
        frame, t, n = _read_table(folder / files[kind], sep, columns, header, on_bad_line,
                                  spec.get("encoding", "utf-8"), None, required[kind], keep)
        tables[kind] = frame
        types = {**t, **types}
        skipped += n
    return RawTables(tables["inter"], tables["user"], tables["item"], types, skipped)


def read_dataset(data_dir, spec: Mapping[str, Any]) -> RawTables:
    """Read the dataset described by the ``data:`` config section.

    Files are looked for in ``data_dir/<spec["name"]>/``; this function does
    not download (see :func:`recstudio_edge.data.catalog.ensure_dataset`).
    ``spec["format"]`` is one of ``atomic | ml-100k | ml-1m | csv | auto``
    (default ``auto``: atomic if ``<name>.inter`` exists, else ``ratings.dat``
    -> ml-1m, else ``u.data`` -> ml-100k).  Other keys used:
    ``on_bad_line``, ``fields`` (renames, see :func:`read_atomic` and
    :func:`_csv_fields`), and for csv ``sep``, ``header``, ``files``.
    """
    name = spec.get("name")
    if not name:
        raise DataError(None, None, "name", "data.name is required (the dataset folder under the data dir)")
    folder = Path(data_dir) / name
    fmt = spec.get("format") or "auto"
    on_bad_line = spec.get("on_bad_line") or "error"
    _check_on_bad_line(on_bad_line)
    if fmt not in FORMATS:
        raise DataError(None, None, "format", f"unknown format '{fmt}', expected one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(folder, name)
    if fmt == "atomic":
        return read_atomic(folder, name, on_bad_line, fields=spec.get("fields"))
    if fmt == "csv":
        return _read_csv_dataset(folder, spec, on_bad_line)
    return read_movielens(folder, fmt, on_bad_line)
