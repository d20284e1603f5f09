"""API token rows (only hashes are stored; `tuner.persistence.tokens` makes and checks them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuner.persistence.models import (
    ApiTokenRow,
)
from tuner.persistence.rows import aware, now


def create_token(session: Session, *, name: str, token_hash: str, scope: str) -> int:
    row = ApiTokenRow(name=name, token_hash=token_hash, scope=scope, created_at=now())
    session.add(row)
    session.flush()
    return row.id


def token_scope(session: Session, token_hash: str) -> str | None:
    """The scope of a live token with this hash, or None."""
    return session.scalar(
        select(ApiTokenRow.scope).where(
            ApiTokenRow.token_hash == token_hash, ApiTokenRow.revoked_at.is_(None)
        )
    )


def token_identity(session: Session, token_hash: str) -> tuple[str, str] | None:
    """The scope and name of a live token with this hash, or None."""
    row = session.execute(
        select(ApiTokenRow.scope, ApiTokenRow.name).where(
            ApiTokenRow.token_hash == token_hash, ApiTokenRow.revoked_at.is_(None)
        )
    ).one_or_none()
    return None if row is None else (row.scope, row.name)


def revoke_token(session: Session, token_id: int) -> bool:
    result = session.execute(
        update(ApiTokenRow)
        .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_tokens(session: Session) -> list[tuple[int, str, str, datetime, datetime | None]]:
    rows = session.execute(
        select(
            ApiTokenRow.id,
            ApiTokenRow.name,
            ApiTokenRow.scope,
            ApiTokenRow.created_at,
            ApiTokenRow.revoked_at,
        ).order_by(ApiTokenRow.id)
    ).all()
    return [(i, n, s, aware(c), aware(r) if r else None) for i, n, s, c, r in rows]
