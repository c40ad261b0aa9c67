"""A payroll file (CSV) as the items of POST /api/v1/payouts/batch. Pure.

The header names the API's fields (any case): merchantReference, amount, destType, bankCode,
walletCode, accountNumber, accountTitle, purpose. Each row is one payout; blank cells are left
out (the API's defaults apply) and blank lines are skipped. A column with a blank name (the
trailing comma a spreadsheet adds) is ignored as long as its cells are blank too. The items are
judged by the batch service, not here: this only reads the file.
"""

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from contracts.domain.text import trimmed

COLUMNS = (
    "merchantReference",
    "amount",
    "destType",
    "bankCode",
    "walletCode",
    "accountNumber",
    "accountTitle",
    "purpose",
)
REQUIRED_COLUMNS = ("merchantReference", "amount", "destType", "accountNumber")
_BY_NAME = {column.lower(): column for column in COLUMNS}


class PayrollFileError(ValueError):
    """The file as a whole cannot be read (not its rows: those are judged one by one)."""


@dataclass(frozen=True)
class PayrollRow:
    line: int  # in the file, its first line being 1
    item: dict[str, str]  # one body of POST /payouts


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayrollFileError("The file must be UTF-8 text (CSV).") from exc


def _columns(header: list[str] | None) -> list[str]:
    if not header:
        raise PayrollFileError("The file is empty: its first line must name the columns.")
    columns = [_BY_NAME.get(trimmed(name).lower(), trimmed(name)) for name in header]
    unknown = [name for name in columns if name and name not in COLUMNS]
    if unknown:
        raise PayrollFileError(
            f"Unknown column(s): {', '.join(unknown)}. The columns are: {', '.join(COLUMNS)}."
        )
    twice = sorted({name for name in columns if name and columns.count(name) > 1})
    if twice:  # the later cell would silently win: a leftover column paying the wrong amount
        raise PayrollFileError(f"Column(s) named twice: {', '.join(twice)}.")
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise PayrollFileError(f"Missing column(s): {', '.join(missing)}.")
    return columns


class _NumberedRows:
    """The rows with a cell in them, each with the line it starts on (a quoted cell may span
    lines); `next_line`: the line the next row starts on, the one a csv.Error is on. Blank rows
    are skipped before the header too: an export that began with one was refused as an empty
    file (json review)."""

    def __init__(self, text: str) -> None:
        # strict: a quote that does not close before its cell ends is an error, not a cell that
        # swallows the rows after it (`"Ali` then every line to the end) or loses its quotes
        # (`"Bob" Jr` read as `Bob Jr`).
        self.reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        self.next_line = 1

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        for cells in self.reader:
            line, self.next_line = self.next_line, self.reader.line_num + 1
            if any(trimmed(cell) for cell in cells):
                yield line, cells


def _item(columns: list[str], cells: list[str], line: int) -> dict[str, str]:
    item: dict[str, str] = {}
    for position, (column, cell) in enumerate(zip(columns, cells, strict=False), start=1):
        if not trimmed(cell):
            continue
        if not column:
            raise PayrollFileError(
                f"Line {line} has a value in column {position}, which has no name in the header."
            )
        item[column] = trimmed(cell)
    return item


def read_payroll(text: str, *, max_rows: int) -> list[PayrollRow]:
    numbered = _NumberedRows(text)
    rows_of_the_file = iter(numbered)
    rows: list[PayrollRow] = []
    try:
        header = next(rows_of_the_file, None)
        columns = _columns(header[1] if header else None)
        for line, cells in rows_of_the_file:
            # Cells past the header's are a spreadsheet's trailing commas while blank: only a
            # header's trailing comma was forgiven, a row's refused the whole file (CSV review).
            if any(trimmed(cell) for cell in cells[len(columns) :]):
                raise PayrollFileError(
                    f"Line {line} has {len(cells)} cells; the header has {len(columns)}."
                )
            rows.append(PayrollRow(line, _item(columns, cells, line)))
            if len(rows) > max_rows:
                raise PayrollFileError(f"At most {max_rows} payouts per file.")
    except csv.Error as exc:
        raise PayrollFileError(
            f"Line {numbered.next_line}: {exc}. A quoted cell must end with its quote (a quote "
            'inside it is written twice: "Ali ""Bob"" Khan").'
        ) from exc
    if not rows:
        raise PayrollFileError("The file has no payouts (only its header).")
    return rows


def sample(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
