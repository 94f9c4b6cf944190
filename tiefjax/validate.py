"""Untrusted input checked in one place: image ids, whole numbers and JSON documents.

The server's request parameters and bodies and ``tiefjax import`` files go through these checks
before anything else sees them, so malformed input is a :class:`BadRequest` naming the rule
(a 400, or one line on the command line), never an exception deep in SQLite or ``json``:

- an **image id** is a non-empty string of valid Unicode (no lone surrogates, which UTF-8
  cannot encode) without control characters;
- a **whole number** is ASCII digits only (``str.isdigit`` also takes ``²`` and ``٣``) within
  SQLite's int64 range, or a narrower one the caller names;
- a **JSON document** is nested at most :data:`MAX_JSON_DEPTH` deep (checked before parsing,
  so the parser never recurses further), its integers fit in int64, its other numbers are
  finite, and its strings are valid Unicode.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

from tiefjax.errors import TiefjaxError

#: The largest integer SQLite stores.
INT64_MAX = 2**63 - 1
MAX_JSON_DEPTH = 32
_DIGITS = re.compile(r"[0-9]{1,19}")
_JSON_SYNTAX = re.compile(r'[\[\]{}"\\]')
#: How much of a bad value an error message quotes.
_SHOWN = 40


class BadRequest(TiefjaxError):
    """Input that breaks a syntax rule (HTTP 400)."""

    http_status = 400
    code = "bad_request"


def shown(value: object) -> str:
    """``repr(value)``, cut to a readable length for error messages."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a usable image id, or None when it is one."""
    if not isinstance(value, str) or not value:
        return "it must be a non-empty string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode (a lone surrogate, or a file name that is not UTF-8)"
    if not value.isprintable() and any(unicodedata.category(c) == "Cc" for c in value):
        return "it contains a control character (a newline, tab, ...)"
    return None


def check_id(value: object, name: str = "image id") -> str:
    """``value`` when it is a usable image id (see the module docstring), else BadRequest."""
    problem = id_problem(value)
    if problem is None and isinstance(value, str):
        return value
    raise BadRequest(f"{name} {shown(value)} is not usable: {problem}")


def parse_int(raw: str, name: str, low: int = 0, high: int = INT64_MAX) -> int:
    """``raw`` (ASCII digits only) as an int in ``[low, high]``, else BadRequest."""
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {shown(raw)}")
    return int(raw)


def _too_deep(text: str, limit: int) -> bool:
    """Whether arrays/objects in JSON ``text`` nest deeper than ``limit`` (one linear pass over
    brackets, quotes and backslashes; brackets inside strings do not count)."""
    depth, in_string, escaped = 0, False, -1
    for match in _JSON_SYNTAX.finditer(text):
        i, c = match.start(), match.group()
        if i == escaped:
            continue
        if in_string:
            if c == "\\":
                escaped = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


def _json_int(raw: str) -> int:
    digits = raw.lstrip("-")
    if len(digits) > 19 or not -INT64_MAX - 1 <= int(raw) <= INT64_MAX:
        raise BadRequest(f"the integer {shown(raw)} is out of range (at most 2^63 - 1 in size)")
    return int(raw)


def _json_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise BadRequest(f"the number {shown(raw)} is too large to be a finite number")
    return value


def _json_constant(name: str) -> float:
    raise BadRequest(f"{name} is not a number JSON allows; send a finite number")


def _check_strings(value: Any) -> None:
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def check_text(value: str) -> None:
    """BadRequest when ``value`` holds a lone surrogate (a ``\\ud800`` escape in JSON)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            f"the string {shown(value)} is not valid Unicode (a lone surrogate escape)"
        ) from None


def loads_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse an untrusted JSON document under the rules of the module docstring."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadRequest(
                f"the JSON is not valid UTF-8 ({err.reason} at byte {err.start})"
            ) from None
    if _too_deep(text, max_depth):
        raise BadRequest(f"the JSON nests arrays/objects more than {max_depth} deep")
    try:
        value = json.loads(
            text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
        )
    except json.JSONDecodeError as err:
        raise BadRequest(
            f"not valid JSON at line {err.lineno} column {err.colno} ({err.msg})"
        ) from None
    _check_strings(value)
    return value
