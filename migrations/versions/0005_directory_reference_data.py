"""the bank and wallet directory is reference data, loaded here

Every create validates its bank or wallet against the directory, so a migrated database must be
able to take payouts without another step (`payouts seed` now only adds a demo merchant). The
rows are this revision's own copy, not an import of the application's list: a migration must
keep doing what it did when it was written (see shared/REFERENCE.md for the codes).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

directory = sa.table(
    "directory_institutions",
    sa.column("code", sa.String),
    sa.column("kind", sa.String),
    sa.column("name", sa.String),
    sa.column("iban_code", sa.String),
    sa.column("is_active", sa.Boolean),
)

BANKS = (  # seed code, name, IBAN bank code
    ("HBL", "Habib Bank Limited", "HABB"),
    ("UBL", "United Bank Limited", "UNIL"),
    ("MCB", "MCB Bank Limited", "MUCB"),
    ("ABL", "Allied Bank Limited", "ABPA"),
    ("NBP", "National Bank of Pakistan", "NBPA"),
    ("MEEZAN", "Meezan Bank Limited", "MEZN"),
    ("ASKARI", "Askari Bank Limited", "ASCM"),
    ("BAHL", "Bank AL Habib Limited", "BAHL"),
    ("FBL", "Faysal Bank Limited", "FAYS"),
    ("BOP", "The Bank of Punjab", "BPUN"),
    ("JSBL", "JS Bank Limited", "JSBL"),
    ("SONERI", "Soneri Bank Limited", "SONE"),
    ("ALFALAH", "Bank Alfalah", "ALFH"),
    ("BANKISLAMI", "BankIslami Pakistan", "BKIP"),
    ("HABIBMETRO", "Habib Metropolitan Bank", "MPBL"),
    ("SCB", "Standard Chartered Pakistan", "SCBL"),
    ("DIB", "Dubai Islamic Bank Pakistan", "DUIB"),
    ("BOK", "The Bank of Khyber", "KHYB"),
    ("SINDH", "Sindh Bank", "SIND"),
)
WALLETS = (  # code, name
    ("EASYPAISA", "Easypaisa (Telenor Microfinance Bank)"),
    ("JAZZCASH", "JazzCash (Mobilink Microfinance Bank)"),
    ("SADAPAY", "SadaPay"),
    ("NAYAPAY", "NayaPay"),
)

Row = dict[str, str | bool | None]


def _row(code: str, kind: str, name: str, iban_code: str | None) -> Row:
    return {"code": code, "kind": kind, "name": name, "iban_code": iban_code, "is_active": True}


ROWS: list[Row] = [
    *(_row(code, "BANK", name, iban_code) for code, name, iban_code in BANKS),
    *(_row(code, "WALLET", name, None) for code, name in WALLETS),
]


def upgrade() -> None:
    # A database migrated before this revision was loaded by `payouts seed`: its rows stay as
    # they are (an operator may have deactivated one), only the missing ones are added.
    present = set(op.get_bind().scalars(sa.select(directory.c.code)))
    op.bulk_insert(directory, [row for row in ROWS if row["code"] not in present])


def downgrade() -> None:
    op.execute(directory.delete().where(directory.c.code.in_([row["code"] for row in ROWS])))
