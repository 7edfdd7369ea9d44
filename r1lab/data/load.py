"""Read task rows from a local file (JSONL, JSON, Parquet, gzipped JSONL) or a Hugging Face hub id.

``read_rows(source, split)`` returns ``(rows, skipped)``: a list of plain dicts and the number
of bad rows skipped. Every error names the file, the place in it (1-based line for JSONL and
JSON syntax errors, 1-based row otherwise) and the field, e.g.::

    data/test.jsonl:17: field 'answer': expected a string or number, got list

Sources, tried in this order:

- an existing directory: the file ``{split}.jsonl`` (or ``.jsonl.gz``, ``.json``, ``.parquet``)
  inside it, so ``read_rows("../shared/data/gsm8k", "train")`` works;
- an existing file: ``.jsonl`` / ``.jsonl.gz`` (one object a line; blank lines are ignored),
  ``.json`` (a list of objects, or an object holding such a list under ``split`` or ``"data"``),
  ``.parquet``. The ``split`` argument is ignored for a file: the file *is* the split;
- something that looks like a path (a data suffix, or starts with ``/ . ~``) but does not
  exist: ``DataError`` (no silent trip to the hub);
- otherwise a hub dataset id, ``"owner/name"`` or ``"owner/name:config"`` (``"openai/gsm8k:main"``),
  loaded with ``datasets.load_dataset(name, config, split=split)``.

Field rules (``required``): a required field must be present and be a string, or an int/float
that is converted to a string (``18`` -> ``"18"``, ``2.0`` -> ``"2"``, ``2.5`` -> ``"2.5"``);
booleans, None, NaN/inf, lists and dicts are errors. Other fields pass through untouched.
``fields`` renames source names to canonical ones before the checks (``{"problem": "question"}``).
``validate`` is an optional extra per-row check returning an error message or None.

With ``skip_bad=True`` a bad row (malformed JSON, bad bytes, not an object, failed field check)
is skipped and counted, and the first few reasons are logged to stderr; never silently.
Whole-file problems (missing file, broken gzip, unreadable Parquet) always raise.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from r1lab.errors import UserError

log = logging.getLogger("r1lab.data")

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
_SHOW_SKIPS = 3  # how many skip reasons are logged before only counting


class DataError(UserError, ValueError):
    """A data file or row that cannot be used; the message names the file, line/row and field."""


def _has_suffix(name: str) -> bool:
    low = name.lower()
    return low.endswith(SUFFIXES) or low.endswith(".json.gz")


def looks_local(source: str) -> bool:
    """Does ``source`` look like a file path rather than a hub id?"""
    return _has_suffix(source) or source.startswith(("/", ".", "~")) or os.path.exists(source)


def resolve_local(source: str, split: str) -> Path:
    """The local file to read for ``source``/``split``; ``DataError`` when there is none."""
    path = Path(source).expanduser()
    if path.is_dir():
        for suffix in SUFFIXES:
            candidate = path / f"{split}{suffix}"
            if candidate.is_file():
                return candidate
        raise DataError(f"{path}: directory has no {split}.jsonl/.jsonl.gz/.json/.parquet")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not _has_suffix(path.name):
        raise DataError(f"{path}: unknown data format; use one of {', '.join(SUFFIXES)}")
    return path


def _as_text(value: Any) -> str | None:
    """A required field's value as a string, or None if its type is not allowed."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_row(
    row: Any,
    fields: dict[str, str] | None,
    required: tuple[str, ...],
    validate: Callable[[dict], str | None] | None = None,
) -> dict:
    """Rename and check one decoded row; raises ``DataError`` with the field-level reason
    (without location: the caller adds it)."""
    if not isinstance(row, dict):
        raise DataError(f"row is not a JSON object (got {_type_name(row)})")
    out = dict(row)
    for src, dst in (fields or {}).items():
        if src in out and src != dst:
            out[dst] = out.pop(src)
    inverse = {dst: src for src, dst in (fields or {}).items()}
    for name in required:
        label = f"field {name!r}" + (f" (source field {inverse[name]!r})" if name in inverse else "")
        if name not in out:
            raise DataError(f"missing required {label}")
        text = _as_text(out[name])
        if text is None:
            raise DataError(f"{label}: expected a string or number, got {_type_name(out[name])}")
        out[name] = text
    if validate is not None:
        problem = validate(out)
        if problem:
            raise DataError(problem)
    return out


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, decoded object or DataError) per non-blank line of a JSONL(.gz) file."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start : exc.start + 1].hex()
                    yield where, DataError(f"not valid UTF-8 (byte 0x{bad} at column {exc.start + 1})")
                    continue
                if lineno == 1:
                    line = line.lstrip("\ufeff")  # a byte-order mark is not an error
                if not line.strip():
                    continue
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield where, DataError(f"malformed JSON: {exc.msg} at column {exc.colno}")
    except (OSError, EOFError) as exc:  # broken gzip stream, unreadable file
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _json_records(path: Path, split: str) -> Iterator[tuple[str, Any]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start : exc.start + 1].hex()})"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg} at column {exc.colno}") from exc
    if isinstance(data, dict):
        key = split if isinstance(data.get(split), list) else "data"
        if not isinstance(data.get(key), list):
            raise DataError(
                f"{path}: expected a list of objects, or an object with a {split!r} or 'data' list"
            )
        data = data[key]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects, got {_type_name(data)}")
    for i, row in enumerate(data, 1):
        yield f"{path}: row {i}", row


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: cannot read Parquet: {exc}") from exc
    for i, row in enumerate(rows, 1):
        yield f"{path}: row {i}", row


def _hub_records(source: str, split: str) -> Iterator[tuple[str, Any]]:
    name, _, config = source.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:  # offline, unknown id, unknown split/config: one clear message
        raise DataError(
            f"{source}: not a local file, and loading it from the Hugging Face hub "
            f"(split {split!r}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    for i, row in enumerate(ds, 1):
        yield f"{source}[{split}]: row {i}", row


def read_rows(
    source: str,
    split: str = "test",
    fields: dict[str, str] | None = None,
    required: tuple[str, ...] = (),
    skip_bad: bool = False,
    validate: Callable[[dict], str | None] | None = None,
) -> tuple[list[dict], int]:
    """Rows of ``source`` as dicts, and how many bad rows were skipped (see module docstring)."""
    if not isinstance(source, str) or not source.strip():
        raise DataError("no data source given (expected a file path or a hub dataset id)")
    if looks_local(source):
        path = resolve_local(source, split)
        low = path.name.lower()
        if low.endswith(".parquet"):
            records = _parquet_records(path)
        elif low.endswith(".json"):
            records = _json_records(path, split)
        else:
            records = _jsonl_records(path)
    else:
        records = _hub_records(source, split)
    rows: list[dict] = []
    skipped = 0
    for where, obj in records:
        try:
            if isinstance(obj, DataError):
                raise obj
            rows.append(check_row(obj, fields, required, validate))
        except DataError as exc:
            message = f"{where}: {exc}"
            if not skip_bad:
                raise DataError(message) from None
            skipped += 1
            if skipped <= _SHOW_SKIPS:
                log.warning("skipping bad row: %s", message)
    if skipped > _SHOW_SKIPS:
        log.warning("skipped %d bad rows in %s in all", skipped, source)
    return rows, skipped


def load_qa(
    source: str,
    split: str,
    question_field: str,
    answer_field: str,
    skip_bad: bool = False,
    limit: int = 0,
    id_prefix: str = "row",
) -> tuple[list[dict], int]:
    """Question/answer rows for a task: each has ``id`` (the row's ``id``/``unique_id``, else
    ``{id_prefix}-{split}-{i}``), ``question``, ``answer`` (raw text of ``answer_field``) and every
    other source field. ``limit > 0`` keeps the first ``limit`` rows. Returns (rows, skipped)."""
    rows, skipped = read_rows(source, split, required=(question_field, answer_field), skip_bad=skip_bad)
    if limit > 0:
        rows = rows[:limit]
    out = []
    for i, row in enumerate(rows):
        rid = row.get("id", row.get("unique_id"))
        example = {"id": str(rid) if rid is not None else f"{id_prefix}-{split}-{i}"}
        example.update({k: v for k, v in row.items() if k not in (question_field, answer_field, "id")})
        example["question"] = row[question_field]
        example["answer"] = row[answer_field]
        if answer_field != "answer" and answer_field not in example:
            example[answer_field] = row[answer_field]  # e.g. keep "solution" when it is the gold source
        out.append(example)
    return out, skipped
