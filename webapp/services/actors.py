"""Who is acting, and what each role may do (domain.md, "People and permissions").

The actor is always an explicit argument of a service; services never look at the request."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Forbidden

VIEW = "view"
RECORD_USAGE = "record_usage"
MANAGE_WALLETS = "manage_wallets"
ADMIN = "admin"
VIEW_LEDGER = "view_ledger"  # every customer's ledger at once (/ledger)

PERMISSIONS: dict[str, frozenset[str]] = {
    "account_manager": frozenset({VIEW, VIEW_LEDGER}),
    "support": frozenset({VIEW, RECORD_USAGE}),
    "finance": frozenset({VIEW, MANAGE_WALLETS, VIEW_LEDGER}),
    "admin": frozenset({VIEW, RECORD_USAGE, MANAGE_WALLETS, VIEW_LEDGER, ADMIN}),
}


@dataclass(frozen=True)
class Actor:
    kind: str  # "user", "api_key" or "system"
    id: int | None
    name: str  # email, key prefix or command name
    role: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


SYSTEM = Actor(kind="system", id=None, name="cli", role="admin")
ANONYMOUS = Actor(kind="anonymous", id=None, name="anonymous", role="")


def require(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise Forbidden(f"The {actor.role} role may not do this ({permission}).")
