"""CBP entry numbers: filer code, seven-digit transaction number and a check digit (XXX-NNNNNNN-C).

Every party that files or reads claims writes entry numbers the same way; a wrong check digit is refused.
"""
from __future__ import annotations

import re

ENTRY_NUMBER_PATTERN = re.compile(r"([0-9A-Z]{3})-?([0-9]{7})-?([0-9])")
# Letters take digit values for the check digit: A-I -> 1-9, J-R -> 1-9, S-Z -> 2-9.
_LETTER_VALUE = {chr(ord("A") + i): (i % 9) + 1 for i in range(18)} | {chr(ord("S") + i): i + 2 for i in range(8)}


def check_digit(first_ten: str) -> int:
    """Modulus-10 check digit over filer code + transaction number (letters mapped to digits).

    Every second digit from the right is doubled and its digits summed (Luhn); the check digit
    brings the total to a multiple of ten.
    """
    digits = [int(c) if c.isdigit() else _LETTER_VALUE[c] for c in first_ten]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 0:
            digit *= 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return (10 - total % 10) % 10


def canonical_entry_number(text: str) -> str | None:
    """`XXX-NNNNNNN-C` if `text` is a well-formed entry number with a correct check digit."""
    match = ENTRY_NUMBER_PATTERN.fullmatch(text)
    if match is None:
        return None
    filer, transaction, check = match.groups()
    if filer == "000" or check_digit(filer + transaction) != int(check):
        return None
    return f"{filer}-{transaction}-{check}"


def make_entry_number(filer: str, transaction: int) -> str:
    digits = f"{transaction:07d}"
    return f"{filer}-{digits}-{check_digit(filer + digits)}"
