"""Tables: the tab-separated ones users write by hand or in a spreadsheet (subject lists, training pairs, label
names), and the CSV measures the pipelines write."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mrinets.errors import InputError, UnreadableFileError
from mrinets.io.output import note_input

__all__ = ["Row", "csv_text", "read_tsv"]


@dataclass(frozen=True)
class Row:
    """One row of a table: its line number in the file (for messages) and its cells by column name."""

    line: int
    cells: dict[str, str]

    def get(self, column: str) -> str | None:
        """The cell, or None when the column is absent or the cell empty."""
        return self.cells.get(column) or None

    def __getitem__(self, column: str) -> str:
        return self.cells[column]


def _text(path: Path) -> str:
    if not path.exists():
        raise UnreadableFileError(path, "file not found")
    if path.is_dir():
        raise UnreadableFileError(path, "is a folder, not a table")
    note_input(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableFileError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")  # spreadsheets put a byte-order mark before the header
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UnreadableFileError(path, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save the "
                                        "table as UTF-8") from None


def read_tsv(path: str | os.PathLike, *, required: Sequence[str], filled: Sequence[str] | None = None) -> list[Row]:
    """Read a tab-separated table with a header row, checking its shape before anything is done with it.

    Parameters
    ----------
    path : path-like
        The table (UTF-8, with or without a byte-order mark).
    required : sequence of str
        Columns the header must have.
    filled : sequence of str, optional
        Columns whose cells must not be empty (default: ``required``).

    Returns
    -------
    list of Row
        The non-blank rows, cells stripped of surrounding spaces.

    Raises
    ------
    InputError
        One line naming the file (and ``file:line`` for a row): missing or
        unreadable file, not UTF-8, a header without the required columns, no
        rows, a row with more or fewer cells than the header, an empty cell in
        a ``filled`` column.
    """
    path = Path(path)
    filled = required if filled is None else filled
    reader = csv.reader(io.StringIO(_text(path), newline=""), delimiter="\t")
    try:
        records = [(reader.line_num, record) for record in reader]
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}", f"not a tab-separated table ({exc})") from None
    records = [(line, cells) for line, cells in records if any(c.strip() for c in cells)]
    header = [c.strip() for c in records[0][1]] if records else []
    missing = [c for c in required if c not in header]
    if not header or missing:
        raise InputError(path, f"needs a tab-separated header with columns {', '.join(required)} (missing: "
                               f"{', '.join(missing or required)})")
    if len(records) < 2:
        raise InputError(path, "has a header but no rows")
    rows = []
    for line, cells in records[1:]:
        if len(cells) != len(header):
            absent = f" (missing: {', '.join(header[len(cells):])})" if len(cells) < len(header) else ""
            raise InputError(f"{path}:{line}", f"row has {len(cells)} cells, the header {len(header)}{absent}")
        row = Row(line, {name: cell.strip() for name, cell in zip(header, cells)})
        for column in filled:
            if not row.cells[column]:
                raise InputError(f"{path}:{line}", f"column {column} is empty")
        rows.append(row)
    return rows


def csv_text(rows: Sequence[dict], *, fields: Sequence[str] | None = None, float_format: str | None = None) -> str:
    """CSV text of ``rows``; columns ``fields`` (default: the first row's keys, others ignored), floats written
    with ``float_format`` (e.g. ``".6g"``) when given."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields or rows[0]), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: format(v, float_format) if float_format and isinstance(v, float) else v
                         for k, v in row.items()})
    return buffer.getvalue()
