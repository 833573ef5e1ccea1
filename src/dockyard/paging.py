"""Offset paging (page, page_size, total) for management listings: users, projects, robots, jobs, audit.

A neutral module so domain services, jobs and api share ONE `Page` type. The OCI /v2 listings
page by cursor (`n`, `last`) instead: that is `domain.listings.CursorPage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from dockyard.errors import InvalidRequest

MAX_PAGE_SIZE = 100
T = TypeVar("T")
__all__ = ["Page", "page_bounds", "MAX_PAGE_SIZE"]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size < self.total


def page_bounds(page: int, page_size: int) -> tuple[int, int]:
    """(limit, offset) for a 1-based page; rejects out-of-range values."""
    if page < 1:
        raise InvalidRequest("page must be >= 1", detail={"page": page})
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page_size must be between 1 and {MAX_PAGE_SIZE}", detail={"page_size": page_size})
    return page_size, (page - 1) * page_size


