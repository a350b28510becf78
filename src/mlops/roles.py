"""The roles of the platform's users and who makes a call (no database here: the CLI and
the API's request gate import it cheaply). Each role can do what the one before it can;
what each may do is in `mlops.users`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mlops.errors import ForbiddenError


class Role(StrEnum):
    VIEWER = "viewer"
    RESEARCHER = "researcher"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """Who makes a call: a user's name and role (and the token it came with)."""

    name: str
    role: Role
    token_id: int | None = None

    def require(self, needed: Role, action: str) -> None:
        """Raise `ForbiddenError` (403) unless the role allows `action`."""
        if not self.role.allows(needed):
            raise ForbiddenError(
                f"{action} needs the {needed.value} role; {self.name} is a {self.role.value}.",
                {"needed": needed.value, "role": self.role.value, "user": self.name},
            )
