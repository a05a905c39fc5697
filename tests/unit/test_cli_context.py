"""Repository names and detection from a checkout's remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import pytest

from jjhub.cli.context import check_repo_name, detect_repo, parse_remote_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://jjhub.example.com/alice/webapp.git", "alice/webapp"),
        ("https://jjhub.example.com/alice/webapp", "alice/webapp"),
        ("http://127.0.0.1:3000/alice/web-app/", "alice/web-app"),
        ("git@jjhub.example.com:alice/webapp.git", "alice/webapp"),
        ("ssh://git@jjhub.example.com:2222/org.x/repo_1.git", "org.x/repo_1"),
        ("file:///srv/git/alice/webapp.git", "alice/webapp"),
        ("jjhub.example.com:alice/webapp", "alice/webapp"),
    ],
)
def test_parse_remote_url_reads_owner_and_repo(url: str, expected: str) -> None:
    assert parse_remote_url(url) == expected


@pytest.mark.parametrize("url", ["", "https://example.com/", "webapp", "https://x/a"])
def test_parse_remote_url_is_none_without_owner_and_repo(url: str) -> None:
    assert parse_remote_url(url) is None


def test_check_repo_name_accepts_owner_slash_repo() -> None:
    assert check_repo_name("alice/webapp.git") == "alice/webapp"


@pytest.mark.parametrize("name", ["webapp", "a/b/c", "alice/", "/x", "al ice/x"])
def test_check_repo_name_refuses_other_shapes(name: str) -> None:
    with pytest.raises(click.BadParameter, match="OWNER/REPO"):
        check_repo_name(name)


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_detect_repo_prefers_origin_in_a_git_checkout(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "remote", "add", "fork", "https://h/bob/webapp.git")
    _git(tmp_path, "remote", "add", "origin", "git@h:alice/webapp.git")
    (tmp_path / "sub").mkdir()

    assert detect_repo(tmp_path / "sub") == "alice/webapp"


def test_detect_repo_reads_a_jj_checkout_without_jj_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / ".jj" / "repo" / "store"
    store.mkdir(parents=True)
    _git(store, "init", "-q", "--bare", "git")
    _git(store / "git", "remote", "add", "origin", "https://h/carol/tool")
    (store / "git_target").write_text("git")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no jj on this path

    assert detect_repo(tmp_path) == "carol/tool"


def test_detect_repo_is_none_outside_a_checkout(tmp_path: Path) -> None:
    assert detect_repo(tmp_path) is None
