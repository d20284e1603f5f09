"""API tokens: created once, shown once, stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

from tuner.persistence import Database
from tuner.persistence import repository as repo

TOKEN_PREFIX = "tnr_"
SCOPES = ("read", "write")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(db: Database, *, scope: str, name: str = "") -> str:
    """Create a token and return it; only its hash is stored, so it cannot be shown again."""
    if scope not in SCOPES:
        raise ValueError(f"scope: must be one of {', '.join(SCOPES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        repo.create_token(session, name=name or scope, token_hash=hash_token(token), scope=scope)
    return token


def scope_of(db: Database, token: str) -> str | None:
    """The scope of a valid token, or None for an unknown or revoked one."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with db.session() as session:
        return repo.token_scope(session, hash_token(token))


def identity_of(db: Database, token: str) -> tuple[str, str] | None:
    """The scope and name of a valid token, or None for an unknown or revoked one."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with db.session() as session:
        return repo.token_identity(session, hash_token(token))


def allows(scope: str | None, needed: str) -> bool:
    """A write token may also read."""
    if scope is None:
        return False
    return scope == "write" or needed == "read"
