"""The shared checks of untrusted input (ids, whole numbers, JSON documents)."""

from __future__ import annotations

import pytest

from tiefjax.validate import INT64_MAX, BadRequest, check_id, loads_json, parse_int


@pytest.mark.parametrize("raw", ["", "²", "٣", "+5", " 5", "5 ", "-1", "5_0", "1e3", "0x1"])
def test_parse_int_takes_ascii_digits_only(raw: str) -> None:
    with pytest.raises(BadRequest, match="must be a whole number from 0 to"):
        parse_int(raw, "n")


def test_parse_int_range() -> None:
    assert parse_int(str(INT64_MAX), "n") == INT64_MAX
    assert parse_int("007", "n") == 7
    with pytest.raises(BadRequest, match="from 0 to 9223372036854775807"):
        parse_int(str(INT64_MAX + 1), "n")
    with pytest.raises(BadRequest, match=r"from 1 to 5, got '6'"):
        parse_int("6", "n", 1, 5)
    with pytest.raises(BadRequest, match=r"\(5000 characters\)"):
        parse_int("9" * 4998, "n")


@pytest.mark.parametrize("bad", ["", "a\nb", "a\tb", "a\x00", "a\x7f", "a\x85", "\ud800", 5, None])
def test_unusable_ids(bad: object) -> None:
    with pytest.raises(BadRequest, match="is not usable"):
        check_id(bad)


def test_usable_ids() -> None:
    for good in ("dress-0042", "weird id %", "é" * 100, "日本", "a😀b"):
        assert check_id(good) == good


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    deep = "[" * 32 + "]" * 32
    assert loads_json(deep) is not None
    with pytest.raises(BadRequest, match="more than 32 deep"):
        loads_json("[" + deep + "]")
    # brackets in strings, escaped quotes and escaped backslashes do not nest
    text = '{"a": "[[[[\\"[[[[", "b": "\\\\", "c": [' + ", ".join(['"{"'] * 5) + "]}"
    assert loads_json(text, max_depth=2)["b"] == "\\"


def test_json_numbers_and_strings() -> None:
    assert loads_json('{"a": -9223372036854775808, "b": 1.5e300}') == {
        "a": -(2**63),
        "b": 1.5e300,
    }
    for bad, message in [
        ("[9223372036854775808]", "out of range"),
        ("[-1e400]", "finite"),
        ("[Infinity]", "not a number JSON allows"),
        ('["\\udfff"]', "not valid Unicode"),
        ('{"\\ud800": 1}', "not valid Unicode"),
        (b'["\xff"]', "not valid UTF-8"),
        ("[1,", "not valid JSON at line 1 column 4"),
    ]:
        with pytest.raises(BadRequest, match=message):
            loads_json(bad)
    assert loads_json('["\\ud83d\\ude00"]') == ["😀"]  # a surrogate pair is one character
