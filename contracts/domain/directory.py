"""The bank and wallet directory (see shared/REFERENCE.md), the application's one copy of it.

Migration 0005 loads the same rows from a copy of its own, as a migration must; tests check the
migrated database against this list.
"""

from typing import NamedTuple


class DirectoryEntry(NamedTuple):
    code: str
    name: str
    iban_code: str | None


BANKS: tuple[DirectoryEntry, ...] = (
    DirectoryEntry("HBL", "Habib Bank Limited", "HABB"),
    DirectoryEntry("UBL", "United Bank Limited", "UNIL"),
    DirectoryEntry("MCB", "MCB Bank Limited", "MUCB"),
    DirectoryEntry("ABL", "Allied Bank Limited", "ABPA"),
    DirectoryEntry("NBP", "National Bank of Pakistan", "NBPA"),
    DirectoryEntry("MEEZAN", "Meezan Bank Limited", "MEZN"),
    DirectoryEntry("ASKARI", "Askari Bank Limited", "ASCM"),
    DirectoryEntry("BAHL", "Bank AL Habib Limited", "BAHL"),
    DirectoryEntry("FBL", "Faysal Bank Limited", "FAYS"),
    DirectoryEntry("BOP", "The Bank of Punjab", "BPUN"),
    DirectoryEntry("JSBL", "JS Bank Limited", "JSBL"),
    DirectoryEntry("SONERI", "Soneri Bank Limited", "SONE"),
    DirectoryEntry("ALFALAH", "Bank Alfalah", "ALFH"),
    DirectoryEntry("BANKISLAMI", "BankIslami Pakistan", "BKIP"),
    DirectoryEntry("HABIBMETRO", "Habib Metropolitan Bank", "MPBL"),
    DirectoryEntry("SCB", "Standard Chartered Pakistan", "SCBL"),
    DirectoryEntry("DIB", "Dubai Islamic Bank Pakistan", "DUIB"),
    DirectoryEntry("BOK", "The Bank of Khyber", "KHYB"),
    DirectoryEntry("SINDH", "Sindh Bank", "SIND"),
)

WALLETS: tuple[DirectoryEntry, ...] = (
    DirectoryEntry("EASYPAISA", "Easypaisa (Telenor Microfinance Bank)", None),
    DirectoryEntry("JAZZCASH", "JazzCash (Mobilink Microfinance Bank)", None),
    DirectoryEntry("SADAPAY", "SadaPay", None),
    DirectoryEntry("NAYAPAY", "NayaPay", None),
)
