"""Who is calling: a user, a robot account, or nobody."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ROBOT_PREFIX = "robot$"


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "robot", "anonymous"]
    name: str
    id: int | None = None
    is_admin: bool = False

    @property
    def is_anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal("anonymous", "")
