"""Reading a batch file for `broker batch`: CSV (a header row of job fields) or JSONL (one job body per
line). Every problem names the file and line; nothing is sent until the whole file reads."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.cli.exits import CommandError

MAX_ITEMS = 1000  # the broker's limit (broker.store.batches.MAX_BATCH_ITEMS), checked before sending
_TEXT = ("prompt", "image_url", "mode", "aspect_ratio", "resolution", "priority", "webhook_url")
_INTEGERS = ("duration_s", "seed")
_BOOLEANS = ("audio", "camera_fixed")
_CONSTRAINTS = ("max_cost_usd", "min_quality")
_CONSTRAINT_INTEGERS = ("max_latency_s",)
_CONSTRAINT_LISTS = ("providers", "exclude_providers", "models")  # several names split by ";"
CSV_COLUMNS = (
    *_TEXT,
    *_INTEGERS,
    *_BOOLEANS,
    *_CONSTRAINTS,
    *_CONSTRAINT_INTEGERS,
    *_CONSTRAINT_LISTS,
    "metadata",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One job of the file: where it is (its line), and its body."""

    line: int
    body: dict[str, Any]


def _cell(where: str, column: str, text: str) -> Any:
    if column in _INTEGERS or column in _CONSTRAINT_INTEGERS:
        try:
            return int(text)
        except ValueError:
            raise CommandError(f"{where}: {column}: {text!r} is not a whole number") from None
    if column in _BOOLEANS:
        if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise CommandError(f"{where}: {column}: {text!r} is not true or false")
        return text.lower() in ("true", "yes", "1")
    if column in _CONSTRAINT_LISTS:
        return [name.strip() for name in text.split(";") if name.strip()]
    if column == "metadata":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CommandError(f"{where}: metadata: not JSON ({exc})") from None
    return text


def _csv_body(where: str, cells: dict[str | None, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    constraints: dict[str, Any] = {}
    for column, text in cells.items():
        if column is None:
            raise CommandError(f"{where}: more cells than the header has columns")
        if text is None or not text.strip():
            continue
        value = _cell(where, column, text.strip())
        if column in (*_CONSTRAINTS, *_CONSTRAINT_INTEGERS, *_CONSTRAINT_LISTS):
            constraints[column] = value
        else:
            body[column] = value
    if constraints:
        body["constraints"] = constraints
    return body


def _read_csv(path: Path, text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    if unknown := [c for c in header if c not in CSV_COLUMNS]:
        raise CommandError(
            f"{path}:1: unknown column {unknown[0]!r}; known columns: {', '.join(CSV_COLUMNS)}"
        )
    rows = []
    for cells in reader:
        where = f"{path}:{reader.line_num}"
        rows.append(Row(reader.line_num, _csv_body(where, dict(cells))))
    return rows


def _read_jsonl(path: Path, text: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except ValueError as exc:
            raise CommandError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise CommandError(f"{path}:{number}: a line must be one job body, a JSON object")
        rows.append(Row(number, body))
    return rows


def read_batch_file(path: Path) -> list[Row]:
    """The file's jobs in order; a `CommandError` names the line of the first problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read it: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path, text)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(path, text)
    else:
        raise CommandError(
            f"{path}: a batch file is .csv (a header row of job fields) or .jsonl (a job per line)"
        )
    if not rows:
        raise CommandError(f"{path}: holds no jobs")
    if len(rows) > MAX_ITEMS:
        raise CommandError(f"{path}: {len(rows)} jobs; a batch holds at most {MAX_ITEMS} (split the file)")
    return rows
