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


def _header(reader: Iterator[list[str]]) -> list[str] | None:
    """The first row with a cell in it: an export may begin with a blank line, and was refused
    as an empty file (json review)."""
    return next((cells for cells in reader if any(trimmed(cell) for cell in cells)), None)


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
    # strict: a quote that does not close before its cell ends is an error, not a cell that
    # swallows the rows after it (`"Ali` then every line to the end) or loses its quotes
    # (`"Bob" Jr` read as `Bob Jr`).
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    first_line = 1  # of the row being read: a quoted cell may span lines
    try:
        columns = _columns(_header(reader))
        rows: list[PayrollRow] = []
        first_line = reader.line_num + 1
        for cells in reader:
            line, first_line = first_line, reader.line_num + 1
            if not any(trimmed(cell) for cell in cells):
                continue
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
            f"Line {first_line}: {exc}. A quoted cell must end with its quote (a quote inside "
            'it is written twice: "Ali ""Bob"" Khan").'
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
