"""Dashboard users and API keys."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import func, select, update

from ..errors import Conflict, NotFound, Unauthorized, ValidationError
from ..extensions import db
from ..models import ROLES, ApiKey, User, utcnow
from . import audit, validation
from .actors import ADMIN, ANONYMOUS, Actor, require
from .tx import transactional, write_transaction

MIN_PASSWORD = 10
KEY_PREFIX = "mk_"
LAST_USED_GRANULARITY = timedelta(minutes=1)
MAX_KEY_DAYS = 3650


@functools.cache
def _hashers(profile: str) -> tuple[PasswordHasher, str]:
    """The hasher of an argon2 profile, and a hash verified against when the email is unknown, so
    that both paths take the same time. Checking a password reads the parameters from its hash."""
    hasher = PasswordHasher.from_parameters(getattr(profiles, profile))
    return hasher, hasher.hash("not-a-real-password")


def _hasher() -> tuple[PasswordHasher, str]:
    """argon2id with PASSWORD_HASH_PROFILE: RFC 9106's "low memory" profile (t=3, m=64 MiB, p=4,
    above OWASP's minimum); only a TESTING app may choose argon2's CHEAPEST."""
    profile = current_app.config["PASSWORD_HASH_PROFILE"]
    if profile == "CHEAPEST" and not current_app.testing:
        raise RuntimeError("PASSWORD_HASH_PROFILE = 'CHEAPEST' is for tests only.")
    return _hashers(profile)


def user_actor(user: User) -> Actor:
    return Actor(kind="user", id=user.id, name=user.email, role=user.role)


def key_actor(key: ApiKey) -> Actor:
    return Actor(kind="api_key", id=key.id, name=key.prefix, role=key.role)


def _password(value: object) -> str:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD:
        raise ValidationError(
            f"The password needs at least {MIN_PASSWORD} characters.", field="password"
        )
    if len(value) > 1000:
        raise ValidationError("The password is too long.", field="password")
    return value


@transactional
def create_user(actor: Actor, *, email: object, role: object, password: object) -> User:
    require(actor, ADMIN)
    address = validation.email(email, required=True)
    role_value = validation.choice(role, ROLES, field="role")
    secret = _password(password)
    if db.session.scalar(select(User.id).where(func.lower(User.email) == address)) is not None:
        raise Conflict(f"A user with email {address!r} already exists.", field="email")
    user = User(email=address, role=role_value, password_hash=_hasher()[0].hash(secret))
    db.session.add(user)
    db.session.flush()
    audit.record(actor, "user.created", target=f"user:{address}", details={"role": role_value})
    return user


def authenticate(email: object, password: object) -> User | None:
    """The active user with these credentials, or None (same time either way)."""
    if not isinstance(email, str) or not isinstance(password, str) or len(password) > 1000:
        return None
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    hasher, dummy_hash = _hasher()
    try:
        hasher.verify(user.password_hash if user else dummy_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    return user


def sign_in(email: object, password: object, *, address: str | None) -> User | None:
    """``authenticate``, and record the attempt in the audit log whichever way it went, with
    the address. A failure names the account only if it exists: what was typed for an unknown
    one (sometimes a password, typed into the wrong field) is not kept."""
    user = authenticate(email, password)
    typed = email.strip().lower() if isinstance(email, str) else ""
    known = user is not None or (
        db.session.scalar(select(User.id).where(User.email == typed)) is not None
    )
    _record_sign_in(user, typed if known else None, address)
    return user


@transactional
def _record_sign_in(user: User | None, account: str | None, address: str | None) -> None:
    audit.record(
        ANONYMOUS if user is None else user_actor(user),
        "user.sign_in_failed" if user is None else "user.signed_in",
        target=None if account is None else f"user:{account}",
        details={"address": address},
    )


def _verifies(password_hash: str, password: object) -> bool:
    if not isinstance(password, str) or len(password) > 1000:
        return False
    try:
        return _hasher()[0].verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def get_user(user_id: int) -> User | None:
    return db.session.get(User, user_id)


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.email)))


def _user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.", field="user")
    return user


def _keep_an_admin(user: User, action: str) -> None:
    """Refuse to take away the last active admin: nobody could give admin back but the CLI.

    The active admins' rows are locked (PostgreSQL; SQLite writers are serialized anyway), so two
    admins demoting each other at once cannot both succeed."""
    if user.role != ADMIN or not user.active:
        return
    admins = db.session.scalars(
        select(User.id).where(User.role == ADMIN, User.active.is_(True)).with_for_update()
    ).all()
    if len(admins) <= 1:
        raise Conflict(
            f"{user.email} is the last active admin and cannot be {action}. "
            "Make another user an admin first.",
            field="role",
        )


@transactional
def set_user_role(actor: Actor, user_id: int, role: object) -> User:
    require(actor, ADMIN)
    user = _user(user_id)
    role_value = validation.choice(role, ROLES, field="role")
    if user.role != role_value:
        _keep_an_admin(user, "demoted")
        user.role = role_value
        user.session_version += 1  # a role change ends the user's sessions
        audit.record(
            actor, "user.role_changed", target=f"user:{user.email}", details={"role": role_value}
        )
    return user


@transactional
def set_password(
    actor: Actor, user_id: int, password: object, *, current_password: object = None
) -> User:
    """An admin sets anyone's password; a user changing their own must give the current one
    (a session left open on a shared screen must not be enough to take the account)."""
    own = actor.kind == "user" and actor.id == user_id
    if not own:
        require(actor, ADMIN)
    user = _user(user_id)
    if own and not _verifies(user.password_hash, current_password):
        raise ValidationError("That is not your current password.", field="current_password")
    user.password_hash = _hasher()[0].hash(_password(password))
    user.session_version += 1  # other logged-in copies end
    audit.record(actor, "user.password_changed", target=f"user:{user.email}")
    return user


@transactional
def deactivate_user(actor: Actor, user_id: int) -> User:
    """A user who may no longer sign in; their history (audit log) stays."""
    require(actor, ADMIN)
    user = _user(user_id)
    if user.active:
        _keep_an_admin(user, "deactivated")
        user.active = False
        user.session_version += 1  # their open sessions end now
        audit.record(actor, "user.deactivated", target=f"user:{user.email}")
    return user


@transactional
def reactivate_user(actor: Actor, user_id: int) -> User:
    require(actor, ADMIN)
    user = _user(user_id)
    if not user.active:
        user.active = True
        audit.record(actor, "user.reactivated", target=f"user:{user.email}")
    return user


def find_user(email: str) -> User:
    user = db.session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    if user is None:
        raise NotFound(f"No user has the email {email.strip()}.", field="email")
    return user


@transactional
def end_sessions(actor: Actor, user_id: int) -> None:
    """Log a user out everywhere: oneself, or anyone as an admin."""
    if actor.id != user_id or actor.kind != "user":
        require(actor, ADMIN)
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.", field="user")
    db.session.execute(
        update(User).where(User.id == user_id).values(session_version=User.session_version + 1)
    )
    audit.record(actor, "user.logged_out", target=f"user:{user.email}")


# ---------------------------------------------------------------- API keys


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    secret: str  # shown once, never stored


def _hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transactional
def create_api_key(
    actor: Actor, *, name: object, role: object = "admin", expires_days: object = None
) -> NewApiKey:
    """A new key; with ``expires_days`` (1 to 3650) it stops working that many days from now."""
    require(actor, ADMIN)
    label = validation.text(name, field="name", max_len=100)
    role_value = validation.choice(role, ROLES, field="role")
    expires_at = None
    if expires_days not in (None, ""):
        if isinstance(expires_days, str) and expires_days.isdecimal():
            expires_days = int(expires_days)
        if (
            isinstance(expires_days, bool)
            or not isinstance(expires_days, int)
            or not 1 <= expires_days <= MAX_KEY_DAYS
        ):
            raise ValidationError(
                f"Give the days until expiry as a whole number from 1 to {MAX_KEY_DAYS}.",
                field="expires_days",
            )
        expires_at = utcnow() + timedelta(days=expires_days)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=label,
        prefix=secret[:11],
        key_hash=_hash_key(secret),
        role=role_value,
        created_by=actor.label,
        expires_at=expires_at,
    )
    db.session.add(key)
    db.session.flush()
    audit.record(
        actor,
        "api_key.created",
        target=f"api_key:{key.prefix}",
        details={
            "name": label,
            "role": role_value,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return NewApiKey(key, secret)


def authenticate_api_key(secret: object) -> ApiKey:
    """The live API key with this secret, or Unauthorized. The secret's SHA-256 is looked up by
    its unique index and compared in constant time; revocation and expiry take effect at once."""
    if not isinstance(secret, str) or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        raise Unauthorized("Send a valid API key as `Authorization: Bearer <key>`.")
    digest = _hash_key(secret)
    key = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or not hmac.compare_digest(key.key_hash, digest) or key.revoked_at:
        raise Unauthorized("This API key is not valid or has been revoked.")
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise Unauthorized("This API key has expired.")
    return key


def touch_api_key(key: ApiKey) -> None:
    """Keep ``last_used_at`` to the minute: at most one write per key per minute, not per call."""
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_GRANULARITY:
        return
    with write_transaction():
        db.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key.id)
            .where(
                ApiKey.last_used_at.is_(None) | (ApiKey.last_used_at < now - LAST_USED_GRANULARITY)
            )
            .values(last_used_at=now)
        )


def list_api_keys() -> list[ApiKey]:
    return list(db.session.scalars(select(ApiKey).order_by(ApiKey.id.desc())))


@transactional
def revoke_api_key(actor: Actor, key_id: int) -> ApiKey:
    require(actor, ADMIN)
    key = db.session.get(ApiKey, key_id)
    if key is None:
        raise NotFound("No such API key.", field="key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(actor, "api_key.revoked", target=f"api_key:{key.prefix}")
    return key
