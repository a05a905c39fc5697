"""SSH access tokens (`ws_...`): bound to one workspace and Linux user.

Stored hashed, expiring, revoked when the workspace is deleted. The gateway
checks them; the API mints one per connection-info request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from jjhub.store.models import SshAccessToken, Workspace, utcnow

PREFIX = "ws_"


class TokenRefused(Exception):
    """Why a token was refused, for the log only; callers answer one message."""


@dataclass(frozen=True)
class Grant:
    workspace_id: str
    machine_id: str
    linux_user: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint(db: Session, workspace_id: str, linux_user: str, ttl_seconds: int) -> str:
    token = PREFIX + secrets.token_hex(24)
    db.add(
        SshAccessToken(
            workspace_id=workspace_id,
            linux_user=linux_user,
            token_hash=_hash(token),
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
        )
    )
    db.flush()
    return token


def check(db: Session, machine_id: str, linux_user: str, token: str) -> Grant:
    """The grant a token gives, or `TokenRefused` saying why."""
    if not token.startswith(PREFIX) or len(token) > 200:
        raise TokenRefused("malformed token")
    row = db.scalar(
        select(SshAccessToken).where(SshAccessToken.token_hash == _hash(token))
    )
    workspace = db.scalar(select(Workspace).where(Workspace.machine_id == machine_id))
    if workspace is None:
        raise TokenRefused("unknown machine")
    if row is None:
        raise TokenRefused("unknown token")
    if row.workspace_id != workspace.id:
        raise TokenRefused("token belongs to another workspace")
    if row.linux_user != linux_user:
        raise TokenRefused("token belongs to another linux user")
    if row.revoked_at is not None:
        raise TokenRefused("token revoked")
    if row.expires_at <= utcnow():
        raise TokenRefused("token expired")
    return Grant(workspace.id, machine_id, linux_user)


def revoke_all(db: Session, workspace_id: str) -> None:
    db.execute(
        update(SshAccessToken)
        .where(SshAccessToken.workspace_id == workspace_id)
        .where(SshAccessToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


# Expired tokens are kept this long so a refusal can still say "expired".
PURGE_AFTER = timedelta(hours=1)


def purge_expired(db: Session, now: datetime | None = None) -> int:
    cutoff = (now or utcnow()) - PURGE_AFTER
    result = db.execute(
        delete(SshAccessToken).where(SshAccessToken.expires_at <= cutoff)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
