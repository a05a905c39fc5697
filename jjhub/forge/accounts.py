"""Users, organisations and personal access tokens.

Tokens are `jjhub_` plus 40 hex characters, shown once and stored as SHA-256
so a copy of the database does not hand out access.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from jjhub.errors import Conflict, Invalid, NotFound, Unauthenticated
from jjhub.store.models import ApiToken, Org, OrgMember, User, utcnow

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOKEN_PATTERN = re.compile(r"^jjhub_[0-9a-f]{40}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str, what: str) -> None:
    if not NAME_PATTERN.match(name):
        raise Invalid(
            f"invalid {what} name {name!r}: use letters, digits, '-', '_' or '.', "
            "starting with a letter or digit, at most 64 characters",
            field="name",
        )


def create_user(db: Session, username: str, is_admin: bool = False) -> User:
    check_name(username, "user")
    if db.scalar(select(User).where(User.username == username)):
        raise Conflict(f"user {username!r} already exists")
    if db.scalar(select(Org).where(Org.name == username)):
        raise Conflict(f"{username!r} is already an organisation name")
    user = User(username=username, is_admin=is_admin)
    db.add(user)
    db.flush()
    return user


def get_user(db: Session, username: str) -> User:
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"user {username!r} not found")
    return user


def create_token(db: Session, user: User, name: str = "default") -> str:
    """A new personal access token; the only time its text is available."""
    token = "jjhub_" + secrets.token_hex(20)
    db.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    db.flush()
    return token


def authenticate(db: Session, token: str) -> User:
    if not TOKEN_PATTERN.match(token):
        raise Unauthenticated()
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        raise Unauthenticated()
    row.last_used_at = utcnow()
    user = db.get(User, row.user_id)
    if user is None:
        raise Unauthenticated()
    return user


def create_org(db: Session, name: str, members: list[str]) -> Org:
    check_name(name, "organisation")
    if db.scalar(select(Org).where(Org.name == name)) or db.scalar(
        select(User).where(User.username == name)
    ):
        raise Conflict(f"the name {name!r} is already taken")
    users = [get_user(db, member) for member in members]
    org = Org(name=name)
    db.add(org)
    db.flush()
    for user in users:
        db.add(OrgMember(org_id=org.id, user_id=user.id))
    db.flush()
    return org


def get_org(db: Session, name: str) -> Org:
    org = db.scalar(select(Org).where(Org.name == name))
    if org is None:
        raise NotFound(f"organisation {name!r} not found")
    return org


def is_org_member(db: Session, org_id: int, user_id: int) -> bool:
    return db.get(OrgMember, (org_id, user_id)) is not None
