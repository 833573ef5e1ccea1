"""Who is calling: a user, a robot account, or nobody."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ROBOT_PREFIX = "robot$"


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "robot", "anonymous"]
    name: str
    id: int | None = None
    is_admin: bool = False
    # Set for accounts read from the database: tokens and login passwords carry it (auth/tokens.py).
    epoch: int | None = field(default=None, compare=False)
    # How the caller proved it: "secret" (password, robot secret, token) or "login-password".
    credential: str = field(default="secret", compare=False)

    @property
    def is_anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal("anonymous", "")
