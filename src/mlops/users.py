"""Users, their roles and their personal API tokens.

Every call that changes something is made by a user, named by the token it sends. A user
has one role; each role can do what the one before it can:

- `viewer`: reads.
- `researcher`: experiments, training, datasets, ingests, evaluations, prompt drafts and
  renders, deployments to staging.
- `approver`: also deployments to production and rollbacks, publishing, rolling back and
  archiving prompts, feature view rollbacks.
- `admin`: also users and tokens.

A token is `mlops_` and 43 random characters, shown once when it is created; the store
keeps its SHA-256 (a token is random, so a fast hash is enough), a name, the first
characters (to tell tokens apart) and an optional expiry. A token stops working when it
is revoked, when it expires and while its user is disabled.

The token of `MLOPS_HOME/api_token` (or `MLOPS_API_TOKEN`) is the bootstrap admin's token
(`admin`), recorded on first use, so a state folder from before users keeps working. It
can be revoked like any other and is not recorded again once revoked; a new one (the token
was rotated) revokes the previous bootstrap token.

A resolved token is remembered for `CACHE_SECONDS` (the API resolves one per call): a
revocation, a role change or a disabled user takes effect at once in the process that made
it and within that time in the others.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import threading
import time
from datetime import timedelta

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlops.db import ApiToken, User, locked_scope, session_scope, utcnow
from mlops.errors import (
    AuthError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreUnavailableError,
)
from mlops.fields import UtcDatetime
from mlops.names import USER_NAME, check_name
from mlops.roles import Principal, Role
from mlops.runs import aware
from mlops.settings import Settings

BOOTSTRAP_ADMIN = "admin"
BOOTSTRAP_TOKEN = "bootstrap"
TOKEN_PREFIX = "mlops_"
HINT_LENGTH = len(TOKEN_PREFIX) + 4
CACHE_SECONDS = 2.0
MAX_EXPIRY_DAYS = 3650


def cli_user(settings: Settings, needed: Role, action: str) -> Principal:
    """Who decides from the CLI (an approval, an acknowledgement): `MLOPS_AUTHOR` as a user
    of the platform, with that user's own role, so that N approvals are N users' (401 for
    a name that is not an enabled user, 403 below `needed`)."""
    found = _user_named(settings, settings.author)
    if isinstance(found, str):
        raise AuthError(
            f"{action} from the CLI is made as MLOPS_AUTHOR ({settings.author!r}), who must be "
            f"a user of the platform: {found}",
            {"user": settings.author},
        )
    found.require(needed, action)
    return found


def local_principal(settings: Settings) -> Principal:
    """Who runs a CLI command on the state folder itself: its owner, with every right."""
    return Principal(settings.author, Role.ADMIN)


class UserInfo(BaseModel):
    name: str
    email: str | None
    role: Role
    disabled: bool
    created_at: UtcDatetime
    created_by: str


class TokenInfo(BaseModel):
    id: int
    user: str
    name: str
    hint: str
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    state: str = Field(description="active, expired or revoked")


class NewToken(TokenInfo):
    token: str
    """The token itself: shown once, never stored."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --------------------------------------------------------------------------- resolving

_cache: dict[tuple[str, str], tuple[float, Principal | str]] = {}
"""(database, token hash) -> (until when, the user or why the token is refused)."""
_cache_lock = threading.Lock()
_down: dict[str, tuple[float, StoreUnavailableError]] = {}
"""database -> (until when, the outage): a database that did not answer is not asked again
for `OUTAGE_SECONDS`, so calls with tokens fail fast instead of each waiting for it."""
OUTAGE_SECONDS = 1.0
_CACHE_LIMIT = 4096
"""Beyond this many entries the expired ones go (wrong tokens must not fill memory)."""


def forget_cached() -> None:
    """Drop every remembered token (after a change to users or tokens)."""
    with _cache_lock:
        _cache.clear()


def resolve(settings: Settings, token: str) -> Principal:
    """The user a bearer token belongs to; `AuthError` (401) naming why not."""
    return resolve_hash(settings, token_hash(token), token)


def resolve_hash(settings: Settings, digest: str, token: str | None = None) -> Principal:
    """`resolve` by the token's hash (a console session keeps the hash, not the token).
    With the token itself, the bootstrap token is recorded on its first use."""
    key = (settings.metadata_url, digest)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return _answer(hit[1])
    down = _down.get(settings.metadata_url)
    if down is not None and down[0] > now:
        raise down[1].with_traceback(None)
    try:
        found = _lookup(settings, digest)
        if found == _UNKNOWN and token is not None and _is_state_folder_token(settings, token):
            ensure_bootstrap(settings)  # its first use
            found = _lookup(settings, digest)
    except StoreUnavailableError as exc:
        _down[settings.metadata_url] = (time.monotonic() + OUTAGE_SECONDS, exc)
        raise
    _remember(key, found, now)
    return _answer(found)


def _remember(key: tuple[str, str], found: Principal | str, now: float) -> None:
    """Keep a lookup's answer for `CACHE_SECONDS` (expired ones go beyond `_CACHE_LIMIT`)."""
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            for stale in [k for k, (until, _) in _cache.items() if until <= now]:
                del _cache[stale]
        _cache[key] = (now + CACHE_SECONDS, found)


def from_proxy(settings: Settings, client: str | None, named: str | None) -> Principal | None:
    """The user a trusted reverse proxy names in `settings.trusted_proxy_header` (`named`,
    the header's value) on a request from `client` (its address); None when no proxy
    identity applies (not configured, no header, or an address not trusted: the header is
    then ignored). `AuthError` (401) for a user the platform does not know or disabled."""
    if not settings.trusted_proxy_header or named is None or not _trusted(settings, client):
        return None
    name = named.strip()
    key = (settings.metadata_url, f"proxy:{name}")
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return _answer(hit[1])
    found = _user_named(settings, name)
    _remember(key, found, now)
    return _answer(found)


def _trusted(settings: Settings, client: str | None) -> bool:
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(network, strict=False)
        for network in settings.trusted_proxies
    )


def _user_named(settings: Settings, name: str) -> Principal | str:
    with session_scope(settings.metadata_url) as session:
        user = session.scalar(select(User).where(User.name == name))
    if user is None:
        return (
            f"The proxy signed in {name!r}, whom the platform does not know: an admin adds "
            "the user (mlops users add)."
        )
    if user.disabled_at is not None:
        return f"The user {user.name} is disabled."
    return Principal(user.name, Role(user.role))


def _is_state_folder_token(settings: Settings, token: str) -> bool:
    return secrets.compare_digest(token.encode(), settings.token.encode())


def _answer(found: Principal | str) -> Principal:
    if isinstance(found, str):
        raise AuthError(found)
    return found


_UNKNOWN = "Invalid bearer token."


def _lookup(settings: Settings, digest: str) -> Principal | str:
    """The token's user, or why it is refused."""
    with session_scope(settings.metadata_url) as session:
        row = session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == digest)
        ).first()
        if row is None:
            return _UNKNOWN
        token, user = row
        state = _state(token)
        if state == "revoked":
            return f"The token {token.name!r} of {user.name} was revoked."
        if state == "expired":
            return (
                f"The token {token.name!r} of {user.name} expired at "
                f"{aware(token.expires_at):%Y-%m-%d %H:%M} UTC."
            )
        if user.disabled_at is not None:
            return f"The user {user.name} is disabled."
        return Principal(user.name, Role(user.role), token.id)


def ensure_bootstrap(settings: Settings) -> None:
    """Record the state folder's token as the bootstrap admin's (once; never again after
    it was revoked: its row stays). A new one (the token was rotated) revokes the one
    before, as replacing the token always did."""
    digest = token_hash(settings.token)
    try:
        with locked_scope(settings.metadata_url) as session:
            if session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)):
                return
            admin = session.scalar(select(User).where(User.name == BOOTSTRAP_ADMIN))
            if admin is None:
                admin = User(name=BOOTSTRAP_ADMIN, role=Role.ADMIN.value, created_by="bootstrap")
                session.add(admin)
                session.flush()
            # a new state-folder token replaces the one before (`MLOPS_API_TOKEN` rotated)
            for previous in session.scalars(
                select(ApiToken).where(
                    ApiToken.user_id == admin.id,
                    ApiToken.name == BOOTSTRAP_TOKEN,
                    ApiToken.revoked_at.is_(None),
                )
            ):
                previous.revoked_at = utcnow()
            session.add(
                ApiToken(
                    user_id=admin.id,
                    name=BOOTSTRAP_TOKEN,
                    token_hash=digest,
                    hint=settings.token[:4] + "…",
                )
            )
    except IntegrityError:  # another process recorded it first
        return


# --------------------------------------------------------------------------- users


def add_user(
    settings: Settings, name: str, role: Role, by: str, email: str | None = None
) -> UserInfo:
    USER_NAME.check(name)
    if email is not None:
        check_name(email, "email")
        if "@" not in email or len(email) > 320:
            raise InvalidInputError(
                f"Invalid email {email!r}: an address with '@', at most 320 characters.",
                {"email": email},
            )
    try:
        with locked_scope(settings.metadata_url) as session:
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise ConflictError(f"A user {name} exists already.", {"user": name})
            user = User(name=name, email=email, role=role.value, created_by=by)
            session.add(user)
            session.flush()
            return _user_info(user)
    except IntegrityError as exc:
        raise ConflictError(f"A user {name} exists already.", {"user": name}) from exc


def list_users(settings: Settings) -> list[UserInfo]:
    with session_scope(settings.metadata_url) as session:
        return [_user_info(u) for u in session.scalars(select(User).order_by(User.name))]


def get_user(settings: Settings, name: str) -> UserInfo:
    """One user (404 when there is none)."""
    with session_scope(settings.metadata_url) as session:
        return _user_info(_user(session, name))


def set_role(settings: Settings, name: str, role: Role) -> UserInfo:
    with locked_scope(settings.metadata_url) as session:
        user = _user(session, name)
        if user.role == Role.ADMIN.value and role is not Role.ADMIN:
            _keep_an_admin(session, user)
        user.role = role.value
        info = _user_info(user)
    forget_cached()
    return info


def set_disabled(settings: Settings, name: str, disabled: bool) -> UserInfo:
    with locked_scope(settings.metadata_url) as session:
        user = _user(session, name)
        if disabled and user.disabled_at is None:
            if user.role == Role.ADMIN.value:
                _keep_an_admin(session, user)
            user.disabled_at = utcnow()
        elif not disabled:
            user.disabled_at = None
        info = _user_info(user)
    forget_cached()
    return info


def _keep_an_admin(session: Session, user: User) -> None:
    # lock the admins' rows first (PostgreSQL; SQLite's writers are serialized anyway), so
    # two admins demoting each other at once cannot both see the other one still there
    session.scalars(select(User.id).where(User.role == Role.ADMIN.value).with_for_update()).all()
    others = session.scalar(
        select(func.count(User.id)).where(
            User.role == Role.ADMIN.value, User.disabled_at.is_(None), User.id != user.id
        )
    )
    if not others:
        raise ConflictError(
            f"{user.name} is the last enabled admin: make another user admin first.",
            {"user": user.name},
        )


def _user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"No user {name}.", {"user": name})
    return user


def _user_info(user: User) -> UserInfo:
    return UserInfo(
        name=user.name,
        email=user.email,
        role=Role(user.role),
        disabled=user.disabled_at is not None,
        created_at=user.created_at,
        created_by=user.created_by,
    )


# --------------------------------------------------------------------------- tokens


def create_token(
    settings: Settings, user: str, name: str, expires_in_days: float | None = None
) -> NewToken:
    """A new token for `user` (shown once in the answer)."""
    check_name(name, "token name")
    if len(name) > 100 or name == BOOTSTRAP_TOKEN:
        raise InvalidInputError(
            f"Invalid token name {name!r}: at most 100 characters, and not "
            f"'{BOOTSTRAP_TOKEN}' (the name of the state folder's token).",
            {"token name": name},
        )
    if expires_in_days is not None and not 0 < expires_in_days <= MAX_EXPIRY_DAYS:
        raise InvalidInputError(
            f"A token expires in more than 0 and at most {MAX_EXPIRY_DAYS} days "
            "(or never: leave the expiry out)."
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    with locked_scope(settings.metadata_url) as session:
        owner = _user(session, user)
        row = ApiToken(
            user_id=owner.id,
            name=name,
            token_hash=token_hash(token),
            hint=token[:HINT_LENGTH] + "…",
            expires_at=expires,
        )
        session.add(row)
        session.flush()
        info = _token_info(row, owner.name)
    return NewToken(**info.model_dump(), token=token)


def list_tokens(settings: Settings, user: str | None = None) -> list[TokenInfo]:
    with session_scope(settings.metadata_url) as session:
        query = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
        if user is not None:
            _user(session, user)
            query = query.where(User.name == user)
        rows = session.execute(query.order_by(ApiToken.id)).all()
        return [_token_info(token, owner) for token, owner in rows]


def revoke_token(settings: Settings, token_id: int) -> TokenInfo:
    with locked_scope(settings.metadata_url) as session:
        row = session.execute(
            select(ApiToken, User.name)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == token_id)
        ).first()
        if row is None:
            raise NotFoundError(f"No token {token_id}.", {"id": token_id})
        token, owner = row
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        info = _token_info(token, owner)
    forget_cached()
    return info


def _state(token: ApiToken) -> str:
    """active, expired or revoked."""
    if token.revoked_at is not None:
        return "revoked"
    expires = aware(token.expires_at)
    return "expired" if expires is not None and expires <= utcnow() else "active"


def _token_info(token: ApiToken, owner: str) -> TokenInfo:
    return TokenInfo(
        id=token.id,
        user=owner,
        name=token.name,
        hint=token.hint,
        created_at=token.created_at,
        expires_at=aware(token.expires_at),
        revoked_at=aware(token.revoked_at),
        state=_state(token),
    )
