"""Destination account rules: Pakistani IBANs (ISO 13616 mod-97), wallet mobiles, plain numbers."""

import re
import string

# ASCII only: `\d` alone also matches Arabic-Indic and other Unicode digits.
_PLAIN_ACCOUNT = re.compile(r"\d{10,16}", re.ASCII)
_PK_IBAN = re.compile(r"PK\d{2}[A-Z]{4}\d{16}", re.ASCII)
_PK_MOBILE = re.compile(r"03\d{9}", re.ASCII)
# The same mobile written internationally: +92 3xx..., 0092 3xx..., 92 3xx... (REFERENCE.md),
# or without its leading 0, as a spreadsheet shows a column of numbers: 3xx...
_PK_MOBILE_OTHERWISE = re.compile(r"(?:(?:\+|00)?92)?(3\d{9})", re.ASCII)


def iban_checksum_ok(iban: str) -> bool:
    """ISO 13616: move the first 4 characters to the end, letters to numbers, mod 97 == 1."""
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def is_pakistani_iban(value: str) -> bool:
    """Its shape, check digits ISO 7064 can give (02-98: 00, 01 and 99 pass mod 97 as 97, 98
    and 02 do, and are never issued) and its checksum."""
    return (
        bool(_PK_IBAN.fullmatch(value)) and 2 <= int(value[2:4]) <= 98 and iban_checksum_ok(value)
    )


def is_wallet_mobile(value: str) -> bool:
    return bool(_PK_MOBILE.fullmatch(value))


_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def upper_ascii(text: str) -> str:
    """`text` with a-z upper-cased, and nothing else: str.upper() also turns letters outside
    ASCII into ASCII ones (U+017F, the long s, into S; U+0131, the dotless i, into I), so
    `PK36\u017fCBL...` passed as an SCB IBAN and `\u017fcb` as the code SCB, stored as text the
    merchant never sent."""
    return text.translate(_ASCII_UPPER)


# Formatting, not part of a number: spaces, dashes of every kind (U+2011 NON-BREAKING HYPHEN from
# Word or Android, U+2212 MINUS SIGN), and the direction marks and embeddings a number copied from
# right-to-left text carries (a contact shared from WhatsApp comes as U+202A ... U+202C).
_FORMATTING = re.compile(r"[\s\-\u2010-\u2015\u2212\u200e\u200f\u061c\u202a-\u202c\u2066-\u2069]")


def normalize_account_number(value: str) -> str:
    """Formatting dropped (spaces, dashes, direction marks); IBAN letters upper-case."""
    return upper_ascii(_FORMATTING.sub("", value))


def domestic_wallet_number(number: str) -> str:
    """A wallet's mobile in the one form it is stored in, `03XXXXXXXXX`, however it was written
    (`+923001234567` was refused, `923001234567` and `3001234567` stored as other accounts);
    anything else as it is."""
    mobile = _PK_MOBILE_OTHERWISE.fullmatch(number)
    return f"0{mobile.group(1)}" if mobile else number


def account_number_problem(dest_type: str, account_number: str) -> str | None:
    """None when the number is acceptable for the destination type, else why not."""
    if _PLAIN_ACCOUNT.fullmatch(account_number):
        return None
    if any(char.isdigit() and not char.isascii() for char in account_number):
        # Each reads as a digit (an Urdu keyboard's ۰۳۰۰...), yet it is not one the bank takes.
        return "must be written with the digits 0-9"
    if dest_type == "BANK":
        if account_number.startswith("PK"):
            return None if is_pakistani_iban(account_number) else "is not a valid Pakistani IBAN"
        return "must be 10-16 digits or a Pakistani IBAN (PK + 22 characters)"
    if is_wallet_mobile(account_number):
        return None
    return "must be 10-16 digits or a mobile number 03XXXXXXXXX"


def iban_bank_code(iban: str) -> str:
    return iban[4:8]
