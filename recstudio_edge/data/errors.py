"""Errors raised by the data layer.

Every problem with user-supplied data (a malformed row, a missing file, a
failed download) is reported as a :class:`DataError` whose message points at
the exact place to fix, compiler style::

    ratings.dat:17: field 'rating': expected float, got 'abc'
"""

from __future__ import annotations

import os

__all__ = ["DataError", "printable"]

MESSAGE_LIMIT = 400  # characters of one error message shown (a 200,000-digit token is not echoed whole)


def printable(text, limit: int | None = None) -> str:
    """``text`` safe for a terminal: control and other unprintable characters escaped (``\\x00``,
    ``\\n``, ``\\u202e``), and with ``limit``, the middle of a longer text replaced by its length.
    Every data error message goes through it (``DataError.__str__``), so raw bytes of a binary file
    never reach the terminal."""
    text = str(text)
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    text = "".join(out)
    if limit is not None and len(text) > limit:
        head, tail = text[: limit * 2 // 3], text[-(limit // 4):]
        text = f"{head}...[{len(text) - len(head) - len(tail)} more characters]...{tail}"
    return text


class DataError(ValueError):
    """Bad or missing input data, located as precisely as possible.

    Args:
        path: the file (or folder / URL) concerned, shown exactly as given;
            ``None`` when no single file is concerned.
        line: 1-based physical line number in ``path`` (blank lines and the
            header count), or ``None`` when the problem is not on one line.
        field: the (standardised or file) field name, or ``None``.
        message: what is wrong, e.g. ``"expected float, got 'abc'"``.

    ``str(err)`` reads ``path:line: field 'name': message``; each of the
    path, line and field parts is left out when it is ``None``.
    """

    def __init__(self, path=None, line=None, field=None, message=""):
        super().__init__(path, line, field, message)
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        location = ""
        if self.path is not None:
            location = self.path
        if self.line is not None:
            location = f"{location}:{self.line}" if location else f"line {self.line}"
        text = self.message
        if self.field is not None:
            text = f"field '{self.field}': {text}" if text else f"field '{self.field}'"
        text = f"{location}: {text}" if location else text
        return printable(text, MESSAGE_LIMIT)
