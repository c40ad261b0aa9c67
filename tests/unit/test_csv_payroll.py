"""The dashboard's payroll file (api_service.dashboard.csv_payroll), read without the API."""

import pytest

from api_service.dashboard.csv_payroll import PayrollFileError, read_payroll

HEADER = "merchantReference,amount,destType,walletCode,accountNumber"


def test_each_row_is_one_payout_body_named_by_the_header_in_any_case() -> None:
    text = (
        "MerchantReference,AMOUNT,destType,walletCode,accountNumber\n"
        "r-1,10.00,WALLET,JAZZCASH,03001234567\n"
    )
    (row,) = read_payroll(text, max_rows=10)
    assert (row.line, row.item["merchantReference"], row.item["amount"]) == (2, "r-1", "10.00")


def test_blank_lines_before_the_header_are_skipped_and_counted() -> None:
    """An export that begins with a blank line was refused as an empty file (json review)."""
    text = f"\n ,\n{HEADER}\nr-1,10.00,WALLET,JAZZCASH,03001234567\n"
    (row,) = read_payroll(text, max_rows=10)
    assert (row.line, row.item["merchantReference"]) == (4, "r-1")
    # an error in the header names the header's line, not line 1 (diff review)
    with pytest.raises(PayrollFileError, match=r"^Line 3: "):
        read_payroll(f'\n\n"{HEADER}\nr-1,10.00,WALLET,JAZZCASH,03001234567\n', max_rows=10)


def test_a_column_named_twice_is_refused() -> None:
    """The later cell silently won: a leftover column paid the wrong amount."""
    text = f"{HEADER},Amount\nr-1,10.00,WALLET,JAZZCASH,03001234567,9000.00\n"
    with pytest.raises(PayrollFileError, match=r"Column\(s\) named twice: amount"):
        read_payroll(text, max_rows=10)


def test_blank_columns_a_spreadsheet_adds_are_ignored_while_their_cells_are_blank() -> None:
    """A header ending in a comma was refused as "Unknown column(s): ."."""
    text = (
        f"{HEADER},, \n"
        "r-1,10.00,WALLET,JAZZCASH,03001234567,,\n"
        "r-2,11.00,WALLET,JAZZCASH,03001234568\n"
    )
    first, second = read_payroll(text, max_rows=10)
    assert "" not in first.item
    assert (first.item["amount"], second.item["amount"]) == ("10.00", "11.00")


def test_a_rows_blank_cells_past_the_header_are_ignored_and_a_value_there_refused() -> None:
    """Only a header's trailing comma was forgiven: a row's refused the whole file (CSV
    review)."""
    text = f"{HEADER}\nr-1,10.00,WALLET,JAZZCASH,03001234567, ,\n"
    [row] = read_payroll(text, max_rows=10)
    assert row.item["accountNumber"] == "03001234567"
    with pytest.raises(PayrollFileError, match=r"Line 2 has 6 cells; the header has 5"):
        read_payroll(f"{HEADER}\nr-1,10.00,WALLET,JAZZCASH,03001234567,x\n", max_rows=10)


def test_a_value_under_a_column_with_no_name_is_refused_naming_its_line() -> None:
    text = f"{HEADER},\nr-1,10.00,WALLET,JAZZCASH,03001234567,9000.00\n"
    with pytest.raises(PayrollFileError, match=r"Line 2 has a value in column 6, which has"):
        read_payroll(text, max_rows=10)


def test_an_unclosed_quote_is_refused_naming_the_line_it_opens_on() -> None:
    """It swallowed every row after it into one cell: the preview showed one payout, invalid on
    its title, and the others were simply missing."""
    text = (
        f"{HEADER},accountTitle\n"
        'r-1,10.00,WALLET,JAZZCASH,03001234567,"Ali\n'
        "r-2,11.00,WALLET,JAZZCASH,03001234568,Bob\n"
        "r-3,12.00,WALLET,JAZZCASH,03001234569,Carl\n"
    )
    with pytest.raises(PayrollFileError, match=r"^Line 2: .*must end with its quote"):
        read_payroll(text, max_rows=10)


@pytest.mark.parametrize("cell", ['"Bob" Jr', '"Ali'])
def test_a_cell_quoted_wrongly_is_refused_not_rewritten(cell: str) -> None:
    """`"Bob" Jr` was read as `Bob Jr`, and a last row's `"Ali` as `Ali`: a payout to a title the
    file does not hold, without a word in the preview."""
    text = f"{HEADER},accountTitle\nr-1,10.00,WALLET,JAZZCASH,03001234567,{cell}\n"
    with pytest.raises(PayrollFileError, match=r"^Line 2: "):
        read_payroll(text, max_rows=10)


def test_a_row_spanning_lines_is_named_by_its_first_line() -> None:
    text = (
        f"{HEADER},accountTitle\n"
        'r-1,10.00,WALLET,JAZZCASH,03001234567,"Ali\nKhan"\n'
        "r-2,11.00,WALLET,JAZZCASH,03001234568,Bob\n"
    )
    first, second = read_payroll(text, max_rows=10)
    assert (first.line, first.item["accountTitle"], second.line) == (2, "Ali\nKhan", 4)


@pytest.mark.parametrize("control", ["\x1c", "\x1d", "\x1e", "\x1f"])
def test_a_control_character_at_a_cells_end_is_kept_for_the_api_to_refuse(control: str) -> None:
    """`str.strip()` takes U+001C-U+001F for spaces: `Ali Khan` + U+001F was paid as `Ali Khan`,
    and a cell holding only one was left out, where the API refuses such a value."""
    text = (
        f"{HEADER},accountTitle\nr-1,10.00,WALLET,JAZZCASH,03001234567{control},Ali Khan{control}\n"
    )
    (row,) = read_payroll(text, max_rows=10)
    assert row.item["accountNumber"] == f"03001234567{control}"
    assert row.item["accountTitle"] == f"Ali Khan{control}"


def test_unicode_spaces_around_cells_are_trimmed() -> None:
    text = f"{HEADER}\n\u3000r-1\xa0,10.00\u2003,WALLET,JAZZCASH,03001234567\n"
    (row,) = read_payroll(text, max_rows=10)
    assert (row.item["merchantReference"], row.item["amount"]) == ("r-1", "10.00")
