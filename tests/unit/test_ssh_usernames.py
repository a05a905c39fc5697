"""Parsing the usernames the SSH gateway accepts."""

from __future__ import annotations

import pytest

from jjhub.ssh.usernames import Login, parse, redact


def test_a_username_with_a_token_carries_it():
    login = parse("vm_abc123+developer:ws_secret")
    assert login == Login("vm_abc123", "developer", "ws_secret")
    assert login.safe == "vm_abc123+developer"


def test_a_username_without_a_token_expects_a_password():
    assert parse("vm_abc123+root") == Login("vm_abc123", "root", None)


def test_only_the_first_colon_separates_the_token():
    assert parse("vm_a+developer:ws_x:y") == Login("vm_a", "developer", "ws_x:y")


@pytest.mark.parametrize(
    "username",
    [
        "",
        "root",
        "developer@vm_abc",
        "vm_abc123",
        "vm_abc123+",
        "+developer",
        "vm_ABC+developer",
        "abc+developer",
        "vm_abc+Developer",
        "vm_abc+developer:",
        "vm_abc+dev/../x:ws_1",
    ],
)
def test_anything_else_is_not_ours(username):
    assert parse(username) is None


def test_redact_drops_the_token_for_logs():
    assert redact("vm_abc+developer:ws_secret") == "vm_abc+developer"
    assert redact("x" * 500) == "x" * 80
