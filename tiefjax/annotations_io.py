"""Move boxes and similarity triplets between workspaces and other tools, as JSON or CSV.

JSON (one object)::

    {"format": "tiefjax-annotations", "version": 1,
     "boxes": [{"image_id": "a", "left": 10, "top": 5, "right": 90, "bottom": 120}, ...],
     "triplets": [{"reference": "a", "positive": "b", "negative": "c"}, ...]}

``format``/``version`` are written on export and optional on import; either list may be missing.

CSV is **one file with a ``kind`` column** (so one file carries everything, like the JSON)::

    kind,image_id,left,top,right,bottom,reference,positive,negative
    box,a,10,5,90,120,,,
    triplet,,,,,,a,b,c

Columns a row does not use are left empty; column order is free, extra columns are ignored.
An id starting with ``=``, ``+``, ``-``, ``@`` or ``'`` is written with a ``'`` in front, so a
spreadsheet shows it as text instead of running it as a formula; import takes one leading ``'``
off every id.

Import is all-or-nothing: every row is checked (syntax, known image ids, box inside the image,
three different images per triplet) inside one store transaction, and if any row is wrong nothing
is written and the error lists each bad row by line (CSV) or position (JSON). Imported boxes
replace the image's current box; importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiefjax.errors import InvalidInput, TiefjaxError
from tiefjax.store import Box, Store
from tiefjax.validate import BadRequest, id_problem, loads_json, shown
from tiefjax.workspace import atomic_write_text

FORMATS = ("json", "csv")
CSV_COLUMNS = (
    "kind",
    "image_id",
    "left",
    "top",
    "right",
    "bottom",
    "reference",
    "positive",
    "negative",
)
_BOX_FIELDS = ("left", "top", "right", "bottom")
_TRIPLET_FIELDS = ("reference", "positive", "negative")
#: A spreadsheet runs a cell starting with one of =+-@ as a formula; ' is the guard itself.
_FORMULA_START = ("=", "+", "-", "@", "'")
#: How many bad rows an import error lists before summarising the rest.
MAX_LISTED_ERRORS = 20


@dataclass(frozen=True)
class ExportReport:
    path: str
    format: str
    boxes: int
    triplets: int


@dataclass(frozen=True)
class ImportReport:
    path: str
    format: str
    boxes_saved: int  # new or changed boxes
    boxes_unchanged: int
    triplets_added: int
    triplets_existing: int

    def summary(self) -> str:
        return (
            f"imported {self.path}: {self.boxes_saved} box(es) saved "
            f"({self.boxes_unchanged} already as in the file), {self.triplets_added} triplet(s) "
            f"added ({self.triplets_existing} already present)"
        )


@dataclass(frozen=True)
class _BoxRow:
    where: str
    image_id: str
    box: Box


@dataclass(frozen=True)
class _TripletRow:
    where: str
    ids: tuple[str, str, str]


def detect_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """``format`` when given, else from the file suffix (.json / .csv)."""
    if format is not None:
        if format not in FORMATS:
            raise InvalidInput(f"unknown annotation format {format!r}; use json or csv")
        return format
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise InvalidInput(
        f"cannot tell the format of {path} from its name; use a .json or .csv file name "
        "or pass --format json|csv"
    )


# -- export ---------------------------------------------------------------------------------------
def annotations_dict(store: Store) -> dict[str, Any]:
    """All boxes and triplets of the store in the JSON layout."""
    boxes = [
        {"image_id": image_id, **dict(zip(_BOX_FIELDS, stored.box.as_tuple(), strict=True))}
        for image_id, stored in sorted(store.boxes().items())
    ]
    triplets = [
        {"reference": t.reference, "positive": t.positive, "negative": t.negative}
        for t in store.list_triplets()
    ]
    return {"format": "tiefjax-annotations", "version": 1, "boxes": boxes, "triplets": triplets}


def export_annotations(
    store: Store, path: str | os.PathLike[str], format: str | None = None
) -> ExportReport:
    """Write every box and triplet to ``path`` (JSON or CSV, replaced atomically)."""
    fmt = detect_format(path, format)
    data = annotations_dict(store)
    if fmt == "json":
        text = _json_text(data)
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for box in data["boxes"]:
            writer.writerow({"kind": "box", **{k: _csv_value(v) for k, v in box.items()}})
        for triplet in data["triplets"]:
            writer.writerow({"kind": "triplet", **{k: _csv_value(v) for k, v in triplet.items()}})
        text = out.getvalue()
    atomic_write_text(Path(path), text)
    return ExportReport(str(path), fmt, len(data["boxes"]), len(data["triplets"]))


def _json_text(data: dict[str, Any]) -> str:
    """Pretty JSON with one box or triplet per line (diff- and grep-friendly)."""
    parts = [f'{{\n "format": {json.dumps(data["format"])},\n "version": {data["version"]},']
    for key in ("boxes", "triplets"):
        items = ",\n".join("  " + json.dumps(item) for item in data[key])
        end = "," if key == "boxes" else ""
        parts.append(f' "{key}": [\n{items}\n ]{end}' if items else f' "{key}": []{end}')
    return "\n".join(parts) + "\n}\n"


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_id(cell: str | None) -> str:
    """An id as written by :func:`_csv_value`: one leading ``'`` (the formula guard) dropped."""
    text = (cell or "").strip()
    return text[1:] if text.startswith("'") else text


# -- import ---------------------------------------------------------------------------------------
def import_annotations(
    store: Store, path: str | os.PathLike[str], format: str | None = None
) -> ImportReport:
    """Check every row of ``path`` against the store, then save all of them or none."""
    fmt = detect_format(path, format)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise InvalidInput(f"{path}: file not found") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"{path}: cannot read it as UTF-8 text ({err})") from err
    errors: list[str] = []
    try:
        boxes, triplets = (_parse_json if fmt == "json" else _parse_csv)(text, errors)
    except BadRequest as err:  # the file as a whole is malformed
        raise InvalidInput(f"{path}: {err}") from None
    return _apply(store, str(path), fmt, boxes, triplets, errors)


def _apply(
    store: Store,
    path: str,
    fmt: str,
    boxes: list[_BoxRow],
    triplets: list[_TripletRow],
    errors: list[str],
) -> ImportReport:
    first_box: dict[str, str] = {}
    for row in boxes:
        if row.image_id in first_box:
            errors.append(
                f"{row.where}: a second box for {row.image_id} "
                f"(the first is at {first_box[row.image_id]}); an image has one box"
            )
        else:
            first_box[row.image_id] = row.where
    saved = unchanged = added = existing = 0
    with store.transaction():
        for row in boxes:
            _check(errors, row.where, store.check_box, row.image_id, row.box)
        for trow in triplets:
            _check(errors, trow.where, store.check_triplet, *trow.ids)
        if errors:
            raise InvalidInput(_error_message(path, errors))
        for row in boxes:
            before = store.get_box(row.image_id)
            after = store.put_box(row.image_id, row.box, expected_version=None, by="import")
            if before is not None and before.version == after.version:
                unchanged += 1
            else:
                saved += 1
        new, existing = store.add_triplets([trow.ids for trow in triplets], by="import")
        added = len(new)
    return ImportReport(path, fmt, saved, unchanged, added, existing)


def _check(errors: list[str], where: str, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except TiefjaxError as err:
        errors.append(f"{where}: {err}")


def _error_message(path: str, errors: list[str]) -> str:
    errors = sorted(errors, key=_position)
    listed = errors[:MAX_LISTED_ERRORS]
    more = len(errors) - len(listed)
    lines = [f"{path}: {len(errors)} bad row(s), nothing was imported; fix them and import again:"]
    lines += [f"  {e}" for e in listed]
    if more:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def _position(message: str) -> tuple[int, int]:
    """Sort key putting errors in file order: ``line N`` (CSV), ``boxes[i]``, ``triplets[i]``."""
    match = re.match(r"(line |boxes\[|triplets\[)(\d+)", message)
    if match is None:
        return (-1, 0)
    return (("line ", "boxes[", "triplets[").index(match.group(1)), int(match.group(2)))


def _parse_json(text: str, errors: list[str]) -> tuple[list[_BoxRow], list[_TripletRow]]:
    data = loads_json(text)
    if not isinstance(data, dict) or not ({"boxes", "triplets"} & data.keys()):
        raise InvalidInput(
            'expected a JSON object with "boxes" and/or "triplets" lists '
            "(see tiefjax export for the layout)"
        )
    boxes: list[_BoxRow] = []
    triplets: list[_TripletRow] = []
    for key in ("boxes", "triplets"):
        if not isinstance(data.get(key, []), list):
            errors.append(f'"{key}" must be a list')
    for i, item in enumerate(data.get("boxes", []) if isinstance(data.get("boxes"), list) else []):
        where = f"boxes[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: expected an object with image_id, left, top, right, bottom")
            continue
        image_id = _id(item.get("image_id"), "image_id", where, errors)
        values = [_json_number(item.get(k), k, where, errors) for k in _BOX_FIELDS]
        if image_id is not None and None not in values:
            boxes.append(_BoxRow(where, image_id, Box(*values)))  # type: ignore[arg-type]
    items = data.get("triplets", []) if isinstance(data.get("triplets"), list) else []
    for i, item in enumerate(items):
        where = f"triplets[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: expected an object with reference, positive, negative")
            continue
        ids = [_id(item.get(k), k, where, errors) for k in _TRIPLET_FIELDS]
        if None not in ids:
            triplets.append(_TripletRow(where, tuple(ids)))  # type: ignore[arg-type]
    return boxes, triplets


def _parse_csv(text: str, errors: list[str]) -> tuple[list[_BoxRow], list[_TripletRow]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    if "kind" not in header:
        raise InvalidInput(
            "the CSV needs a header row with a kind column: " + ",".join(CSV_COLUMNS)
        )
    boxes: list[_BoxRow] = []
    triplets: list[_TripletRow] = []
    try:
        for row in reader:
            where = f"line {reader.line_num}"
            kind = (row.get("kind") or "").strip().lower()
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            if kind == "box":
                missing = [c for c in ("image_id", *_BOX_FIELDS) if c not in header]
                if missing:
                    errors.append(f"{where}: box rows need the column(s) {', '.join(missing)}")
                    continue
                image_id = _id(_csv_id(row["image_id"]), "image_id", where, errors)
                values = [_csv_number(row[k], k, where, errors) for k in _BOX_FIELDS]
                if image_id is not None and None not in values:
                    boxes.append(_BoxRow(where, image_id, Box(*values)))  # type: ignore[arg-type]
            elif kind == "triplet":
                missing = [c for c in _TRIPLET_FIELDS if c not in header]
                if missing:
                    errors.append(f"{where}: triplet rows need the column(s) {', '.join(missing)}")
                    continue
                ids = [_id(_csv_id(row[k]), k, where, errors) for k in _TRIPLET_FIELDS]
                if None not in ids:
                    triplets.append(_TripletRow(where, tuple(ids)))  # type: ignore[arg-type]
            else:
                errors.append(f"{where}: kind must be box or triplet, got {row.get('kind')!r}")
    except csv.Error as err:
        raise InvalidInput(f"not valid CSV at line {reader.line_num} ({err})") from err
    return boxes, triplets


def _id(value: Any, name: str, where: str, errors: list[str]) -> str | None:
    problem = id_problem(value)
    if problem is None:
        return value
    errors.append(f"{where}: {name} {shown(value)} is not an image id: {problem}")
    return None


def _json_number(value: Any, name: str, where: str, errors: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors.append(f"{where}: {name} must be a number, got {value!r}")
        return None
    return float(value)


def _csv_number(value: str | None, name: str, where: str, errors: list[str]) -> float | None:
    try:
        number = float((value or "").strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        errors.append(f"{where}: {name} must be a number, got {value!r}")
        return None
    return number
