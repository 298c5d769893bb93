"""CSV cells that a spreadsheet cannot run: OWASP's CSV-injection guidance.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a formula
by Excel, LibreOffice and Google Sheets; notes, references, reasons, event ids and emails come
from users. Such a cell gets a leading ``'`` (shown as text, not run). Numbers stay numbers: an
amount such as ``-5.25`` is written as it is. Every cell is quoted, so that a separator inside a
value (``;`` where the spreadsheet's locale splits on it) cannot start a new, unescaped cell."""

from __future__ import annotations

import csv
import re
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
QUOTING = csv.QUOTE_ALL


def safe_cell(value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    if _NUMBER.fullmatch(value):
        return value
    return "'" + value


def safe_row(row: list[Any]) -> list[Any]:
    return [safe_cell(value) for value in row]
