"""The bank and wallet directory as shared/REFERENCE.md lists it: what the tests expect to find
after migration 0005 (which carries its own copy of the rows, as a migration must)."""

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
