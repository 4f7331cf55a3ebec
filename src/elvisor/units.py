"""Sizes as users write them: 512M, 2G, 1048576, 64K."""

import re

from elvisor.errors import UserError

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, default_unit: str = "") -> int:
    """Bytes in `text`: a number with an optional K/M/G/T suffix (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise UserError(f"{text!r} is not a size: write a number with K, M or G, like 512M")
    number, suffix = match.groups()
    return int(number) * _SUFFIXES[(suffix or default_unit).upper()]
