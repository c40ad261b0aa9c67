"""The merchant's lists, newest first: by page number (with a total), or after a cursor, the last
item of the previous page. Pages repeat or skip items when items arrive between two requests (a
new event pushes every page one item down); a cursor does not, as the next page is what is older
than the cursor's item, whatever arrived since. But an item is ordered by when it was made, not
by when it committed: one whose transaction waited on a lock lands below items committed before
it, and a walk already past that place misses it (the README tells a syncing client to read back
over the last minute; the lists review found it)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Row, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from api_service.errors import ValidationFailed
from contracts.db.engine import read_one_snapshot

STARTING_AFTER = "startingAfter"

PageNumber = Annotated[
    int | None, Query(ge=1, le=100_000, description=f"1 unless given; not with {STARTING_AFTER}")
]
PageSize = Annotated[int, Query(ge=1, le=100)]
# A list's query (one entity, or an entity with what it joins) and its order's columns.
ListQuery = Select[*tuple[Any, ...]]
Order = Sequence[InstrumentedAttribute[Any]]


class Pagination(BaseModel):
    """`page`, `total` and `totalPages` answer a page number; a cursor's page has none (no count
    is run). `nextCursor`: the `startingAfter` of the next page, while there is one."""

    limit: int
    hasMore: bool
    page: int | None = None
    total: int | None = None
    totalPages: int | None = None
    nextCursor: str | None = None


@dataclass(frozen=True)
class Window:
    """The part of a list asked for: page `page`, or the items older than `after` (the sort
    key of the cursor's item, newest-first order's columns)."""

    limit: int
    page: int = 1
    after: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Listed:
    rows: Sequence[Row[Any]]
    has_more: bool
    total: int | None  # counted for a page number only

    def firsts(self) -> list[Any]:
        """Each row's first column (the entity of a query of one)."""
        return [row[0] for row in self.rows]


def item_key(
    order: Order, id_column: InstrumentedAttribute[Any], owned: ColumnElement[bool]
) -> Callable[[Any], ListQuery]:
    """What selects the list order's key of an item named as a cursor, when `owned` (it is the
    merchant's)."""
    return lambda item_id: select(*order).where(id_column == item_id, owned)


async def window_of(
    session: AsyncSession,
    *,
    page: int | None,
    starting_after: str | int | None,
    limit: int,
    cursor_key: Callable[[Any], ListQuery],
    items: str,
) -> Window:
    """The window a request asks for. `cursor_key` (item_key) finds the cursor's item; none is a
    400 naming startingAfter (`items`: what the cursor should name)."""
    if page is not None and starting_after is not None:  # one was silently dropped
        raise ValidationFailed.on("page", f"is not taken with {STARTING_AFTER}: a page or a cursor")
    if starting_after is None:
        return Window(limit, page or 1)
    key = (await session.execute(cursor_key(starting_after))).first()
    if key is None:
        raise ValidationFailed.on(STARTING_AFTER, f"is not the id of one of your {items}")
    return Window(limit, after=tuple(key))


async def list_newest_first(
    session: AsyncSession,
    query: ListQuery,
    conditions: Sequence[ColumnElement[bool]],
    order: Order,
    window: Window,
    counted: ListQuery | None = None,
) -> Listed:
    """`query`'s rows meeting `conditions`, newest first by `order` (each column descending;
    the last one unique), within `window`. Read in one snapshot, with what the caller reads next
    (a page's count and rows; a delivery's attempts, which by cursor were read after an attempt
    had been recorded that the delivery's row did not show yet). A page's total counts `counted`
    instead, where `query` joins what each of its rows has exactly one of: the join counted
    too made the optimizer scan the joined table whole."""
    await read_one_snapshot(session)
    newest_first = [column.desc() for column in order]
    if window.after is not None:
        rows = (
            await session.execute(
                query.where(*conditions, _older_than(order, window.after))
                .order_by(*newest_first)
                .limit(window.limit + 1)
            )
        ).all()
        return Listed(rows[: window.limit], len(rows) > window.limit, None)
    rows_counted = (query if counted is None else counted).where(*conditions)
    total = await session.scalar(select(func.count()).select_from(rows_counted.subquery())) or 0
    rows = (
        await session.execute(
            query.where(*conditions)
            .order_by(*newest_first)
            .offset((window.page - 1) * window.limit)
            .limit(window.limit)
        )
    ).all()
    return Listed(rows, window.page * window.limit < total, total)


def _older_than(order: Order, key: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows after `key` in newest-first order: (a, b) < (x, y) as a < x or (a = x and b < y),
    which the optimizer reads as a range of the index."""
    first, *rest = order
    older: ColumnElement[bool] = first < key[0]
    if not rest:
        return older
    return or_(older, and_(first == key[0], _older_than(rest, key[1:])))


def pagination_json(listed: Listed, window: Window, last_id: Any) -> dict[str, Any]:
    """`last_id`: the id of the page's last item (its cursor, should there be more)."""
    cursor = str(last_id) if listed.has_more and listed.rows else None
    if listed.total is None:
        return {"limit": window.limit, "hasMore": listed.has_more, "nextCursor": cursor}
    return {
        "page": window.page,
        "limit": window.limit,
        "total": listed.total,
        "totalPages": (listed.total + window.limit - 1) // window.limit,
        "hasMore": listed.has_more,
        "nextCursor": cursor,
    }
