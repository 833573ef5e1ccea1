"""Docker token scopes: `repository:<name>:pull,push`, `registry:catalog:*`."""

from __future__ import annotations

from dataclasses import dataclass

ALL_ACTIONS = ("pull", "push", "delete")


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """Parse scope parameters; each may hold several space-separated scopes. Malformed ones are ignored,
    as a token server grants the intersection of what was asked and what is allowed."""
    out: list[Scope] = []
    for value in values:
        for item in value.split():
            type_, sep, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not name:
                continue
            type_ = type_.split("(", 1)[0]  # repository(plugin) → repository
            acts = tuple(a for a in actions.split(",") if a)
            out.append(Scope(type_, name, acts))
    return out


def challenge_scope(type_: str, name: str, actions: tuple[str, ...]) -> str:
    """The `scope` of a WWW-Authenticate challenge: what parse_scopes reads back."""
    return f"{type_}:{name}:{','.join(actions)}"
