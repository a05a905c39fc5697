"""SSH access tokens against a real SQLite database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jjhub.forge import accounts, repos
from jjhub.store.db import open_database
from jjhub.store.models import SshAccessToken, Workspace, utcnow
from jjhub.workspaces import access_tokens


@pytest.fixture
def db(tmp_path):
    database = open_database(tmp_path)
    with database.session() as session:
        user = accounts.create_user(session, "tess")
        repo = repos.create_repository(session, user, "r")
        session.add(
            Workspace(
                id="ws-1", repository_id=repo.id, user_id=user.id, name="w",
                status="running", machine_id="vm_one", runtime="runc",
            )
        )  # fmt: skip
    return database


def test_a_fresh_token_grants_its_workspace_and_user(db):
    with db.session() as session:
        token = access_tokens.mint(session, "ws-1", "developer", 60)
    with db.session() as session:
        grant = access_tokens.check(session, "vm_one", "developer", token)
    assert grant == access_tokens.Grant("ws-1", "vm_one", "developer")
    assert token.startswith("ws_")


@pytest.mark.parametrize(
    ("machine", "user", "reason"),
    [
        ("vm_two", "developer", "unknown machine"),
        ("vm_one", "root", "token belongs to another linux user"),
    ],
)
def test_a_token_is_bound_to_one_machine_and_user(db, machine, user, reason):
    with db.session() as session:
        token = access_tokens.mint(session, "ws-1", "developer", 60)
    with (
        db.session() as session,
        pytest.raises(access_tokens.TokenRefused, match=reason),
    ):
        access_tokens.check(session, machine, user, token)


def test_expired_and_revoked_tokens_are_refused_with_their_reason(db):
    with db.session() as session:
        expired = access_tokens.mint(session, "ws-1", "developer", -1)
        revoked = access_tokens.mint(session, "ws-1", "developer", 60)
        access_tokens.revoke_all(session, "ws-1")
    with db.session() as session:
        with pytest.raises(access_tokens.TokenRefused, match="expired|revoked"):
            access_tokens.check(session, "vm_one", "developer", expired)
        with pytest.raises(access_tokens.TokenRefused, match="revoked"):
            access_tokens.check(session, "vm_one", "developer", revoked)


def test_purge_keeps_recently_expired_tokens_for_an_hour(db):
    with db.session() as session:
        access_tokens.mint(session, "ws-1", "developer", -60)
        access_tokens.mint(session, "ws-1", "developer", -2 * 3600)
        access_tokens.mint(session, "ws-1", "developer", 3600)
    with db.session() as session:
        assert access_tokens.purge_expired(session) == 1
    with db.session() as session:
        assert session.query(SshAccessToken).count() == 2
        later = utcnow() + timedelta(hours=3)
        assert access_tokens.purge_expired(session, now=later) == 2
