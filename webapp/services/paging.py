"""Paging, written once. Every list runs newest first over ``id``: the API and the dashboard page
with an opaque keyset cursor (a page costs the same at the millionth row as at the first); the
Metrifox door's page numbers are the same query with an offset and a count. Every integer that
comes from a URL or a cursor goes through ``whole_number``."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select

from ..errors import ValidationError
from ..extensions import db

T = TypeVar("T")
AnySelect = Select[*tuple[Any, ...]]
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
DEFAULT_PER_PAGE = 25
MAX_PAGE = 1_000_000
MAX_ID = 2**63 - 1  # a BIGINT: no row id is larger
_WHOLE = re.compile(r"[+-]?[0-9]{1,19}")  # ASCII digits only: int() also takes "٣" and "1_0"


def whole_number(value: object, *, field: str, low: int, high: int, default: int = 0) -> int:
    """An integer from a URL (or a cursor) within [low, high]; None or "" is ``default``."""
    if value is None or value == "":
        return default
    text = str(value).strip() if isinstance(value, str | int) else ""
    if isinstance(value, bool) or not _WHOLE.fullmatch(text):
        raise ValidationError(f"`{field}` must be a whole number.", field=field)
    number = int(text)
    if not low <= number <= high:
        raise ValidationError(f"`{field}` must be between {low} and {high}.", field=field)
    return number


# ---------------------------------------------------------------- keyset pages (cursor)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: object) -> int | None:
    """The id a cursor continues below; a cursor this server did not give out is a 422."""
    if cursor is None or cursor == "":
        return None
    try:
        text = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4)).decode()
    except (ValueError, UnicodeDecodeError, binascii.Error):
        text = ""
    prefix, _, value = text.partition(":")
    try:
        if prefix != "v1":
            raise ValidationError("")
        return whole_number(value, field="cursor", low=1, high=MAX_ID)
    except ValidationError:
        raise ValidationError(
            "`cursor` is not a cursor this server gave out.", field="cursor"
        ) from None


def parse_limit(limit: object, default: int = DEFAULT_LIMIT) -> int:
    return whole_number(limit, field="limit", low=1, high=MAX_LIMIT, default=default)


def _newest_first(stmt: AnySelect, id_column: Any, size: int) -> AnySelect:
    return stmt.order_by(id_column.desc()).limit(size)


def keyset_page(
    stmt: AnySelect,
    id_column: Any,
    last_id: Callable[[Any], int],
    *,
    cursor: object,
    limit: object,
    scalars: bool = False,
) -> Page[Any]:
    """One page of ``stmt`` below the cursor's id: one query, one row more than the page to
    know whether there is a next page."""
    size = parse_limit(limit)
    after = decode_cursor(cursor)
    if after is not None:
        stmt = stmt.where(id_column < after)
    result = db.session.execute(_newest_first(stmt, id_column, size + 1))
    rows: Sequence[Any] = result.scalars().all() if scalars else result.all()
    more = len(rows) > size
    items = list(rows[:size])
    return Page(items, encode_cursor(last_id(items[-1])) if more and items else None)


# ---------------------------------------------------------------- page numbers (Metrifox)


@dataclass(frozen=True)
class NumberedPage(Generic[T]):
    items: list[T]
    page: int
    per_page: int
    total_count: int

    @property
    def total_pages(self) -> int:
        return -(-self.total_count // self.per_page)

    @property
    def prev_page(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next_page(self) -> int | None:
        return self.page + 1 if self.page < self.total_pages else None

    def meta(self) -> dict[str, int | None]:
        """The Metrifox SDK's ``meta`` block."""
        return {
            "current_page": self.page,
            "prev_page": self.prev_page,
            "next_page": self.next_page,
            "total_count": self.total_count,
            "total_pages": self.total_pages,
            "per_page": self.per_page,
        }


def numbered_page(
    stmt: AnySelect, id_column: Any, *, page: object, per_page: object, scalars: bool = False
) -> NumberedPage[Any]:
    """Page ``page`` of ``stmt`` in the same order as the keyset pages, with the total count."""
    number = whole_number(page, field="page", low=1, high=MAX_PAGE, default=1)
    size = whole_number(per_page, field="per_page", low=1, high=MAX_LIMIT, default=DEFAULT_PER_PAGE)
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    result = db.session.execute(_newest_first(stmt, id_column, size).offset((number - 1) * size))
    rows = result.scalars().all() if scalars else result.all()
    return NumberedPage(list(rows), number, size, total)
