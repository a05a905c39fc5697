"""CLI commands against the real API app (no machines): auth, repo, issue, land."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from jjhub.cli.main import COMMANDS, cli
from tests.support.forge_api import serve_forge_api


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    with serve_forge_api(tmp_path_factory.mktemp("cli")) as api:
        token = api.create_user("alice")
        api.create_user("bob")
        api.create_repo("bob", "secret")
        yield SimpleNamespace(api=api, token=token)


@pytest.fixture
def env(tmp_path: Path, forge: SimpleNamespace) -> dict[str, str]:
    """A logged-in environment with its own XDG directories."""
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "JJHUB_API_URL": forge.api.url,
        "JJHUB_TOKEN": forge.token,
        "NO_COLOR": "1",
    }


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


def run_json(env: dict[str, str], *args: str) -> Any:
    result = run(env, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- auth ----------------------------------------------------------------------


def test_login_checks_the_token_and_saves_it_with_mode_600(
    env: dict[str, str], forge: SimpleNamespace, tmp_path: Path
) -> None:
    env = {**env, "JJHUB_TOKEN": ""}
    result = run(env, "auth", "login", "--url", forge.api.url, stdin=forge.token)

    assert result.exit_code == 0, result.output
    assert f"Logged in to {forge.api.url} as alice" in result.stderr
    path = tmp_path / "config" / "jjhub" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    status = run_json({**env, "JJHUB_API_URL": ""}, "auth", "status")
    assert status["username"] == "alice"
    assert status["token_source"] == "config"


def test_login_with_a_wrong_token_fails_clearly(
    env: dict[str, str], forge: SimpleNamespace, tmp_path: Path
) -> None:
    result = run(
        env, "auth", "login", "--url", forge.api.url, stdin="jjhub_" + "0" * 40
    )

    assert result.exit_code != 0
    assert "rejected this token" in result.stderr
    assert "authentication required" in result.stderr
    assert not (tmp_path / "config" / "jjhub" / "config.json").exists()


def test_logout_forgets_the_token(env: dict[str, str], forge: SimpleNamespace) -> None:
    env = {**env, "JJHUB_TOKEN": ""}
    run(env, "auth", "login", stdin=forge.token)

    assert run_json(env, "auth", "logout") == {"status": "logged_out"}
    result = run(env, "auth", "status")
    assert result.exit_code == 4
    assert "jjhub auth login" in result.stderr


def test_commands_without_a_token_hint_at_login(env: dict[str, str]) -> None:
    env = {**env, "JJHUB_TOKEN": ""}
    for args in (["repo", "list"], ["workspace", "list", "-R", "alice/x"]):
        result = run(env, *args)

        assert result.exit_code == 4
        assert result.stderr.strip().splitlines() == [
            "Error: not logged in: run `jjhub auth login` (or set JJHUB_TOKEN)"
        ]


def test_unreachable_server_is_one_line_with_the_url(env: dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    result = run({**env, "JJHUB_API_URL": url}, "repo", "list")

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert url in lines[0]


def test_a_bad_repository_name_is_one_line(env: dict[str, str]) -> None:
    result = run(env, "issue", "list", "-R", "not-a-repo")

    assert result.exit_code == 2
    assert "OWNER/REPO" in result.stderr


def test_no_repository_outside_a_checkout_says_what_to_do(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    result = run(env, "issue", "list")

    assert result.exit_code == 2
    assert "-R OWNER/REPO" in result.stderr


# -- repositories, issues, landing requests -------------------------------------


def test_repo_create_view_list(env: dict[str, str]) -> None:
    created = run_json(env, "repo", "create", "webapp", "-d", "The app")

    assert created["full_name"] == "alice/webapp"
    assert run_json(env, "repo", "view", "alice/webapp")["description"] == "The app"
    names = [r["full_name"] for r in run_json(env, "repo", "list")]
    assert "alice/webapp" in names and "bob/secret" not in names
    table = run(env, "repo", "list")
    assert table.stdout.splitlines()[0].split() == ["NAME", "DESCRIPTION", "CREATED"]


def test_api_errors_print_the_server_message(env: dict[str, str]) -> None:
    result = run(env, "repo", "view", "bob/secret")

    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: repository not found"


def test_issue_create_view_list(env: dict[str, str], forge: SimpleNamespace) -> None:
    forge.api.create_repo("alice", "issues")
    repo = ["-R", "alice/issues"]

    made = run_json(
        env, "issue", "create", *repo, "-t", "Crash", "-b", "Boom", "-l", "bug"
    )
    second = run_json(env, "issue", "create", *repo, "--title", "Slow")

    assert (made["number"], second["number"]) == (1, 2)
    assert made["labels"] == [{"name": "bug"}]
    assert run_json(env, "issue", "view", "1", *repo)["body"] == "Boom"
    assert [i["number"] for i in run_json(env, "issue", "list", *repo)] == [2, 1]
    text = run(env, "issue", "list", *repo).stdout
    assert "Crash" in text and "Slow" in text
    missing = run(env, "issue", "view", "99", *repo)
    assert missing.exit_code == 1
    assert "issue not found" in missing.stderr


def test_land_create_view_list(env: dict[str, str], forge: SimpleNamespace) -> None:
    forge.api.create_repo("alice", "lands")
    repo = ["-R", "alice/lands"]

    made = run_json(
        env,
        "land",
        "create",
        *repo,
        "-t",
        "Fix",
        "-b",
        "Closes #3",
        "--change",
        "kxyz",
        "--draft",
    )

    assert made["number"] == 1
    assert made["draft"] is True
    assert made["target_bookmark"] == "main"
    assert made["closes_issues"] == [3]
    assert run_json(env, "land", "view", "1", *repo)["change_ids"] == ["kxyz"]
    assert [r["number"] for r in run_json(env, "land", "list", *repo)] == [1]
    assert "(draft)" in run(env, "land", "list", *repo).stdout


def test_land_create_without_a_target_is_validation_failed(
    env: dict[str, str], forge: SimpleNamespace
) -> None:
    forge.api.create_repo("alice", "strict")

    result = run(
        env, "land", "create", "-R", "alice/strict", "-t", "x", "--target", " "
    )

    assert result.exit_code == 1
    assert "validation failed (target_bookmark)" in result.stderr


def test_repository_is_detected_from_the_git_remote(
    env: dict[str, str],
    forge: SimpleNamespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forge.api.create_repo("alice", "detected")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)
    subprocess.run(
        ["git", "remote", "add", "origin", f"{forge.api.url}/alice/detected.git"],
        cwd=checkout,
        check=True,
    )
    monkeypatch.chdir(checkout)

    assert run_json(env, "repo", "view")["full_name"] == "alice/detected"
    assert run_json(env, "issue", "list") == []


# -- help ----------------------------------------------------------------------


def _leaves(
    group: click.Group, ctx: click.Context, path: list[str]
) -> Iterator[tuple[list[str], click.Command]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from _leaves(command, ctx, [*path, name])
        else:
            yield [*path, name], command


def _cli_commands() -> list[tuple[list[str], click.Command]]:
    with click.Context(cli) as ctx:
        return [
            leaf
            for noun in ("auth", "repo", "workspace", "issue", "land")
            for leaf in _leaves(cli.get_command(ctx, noun), ctx, [noun])  # type: ignore[arg-type]
        ]


@pytest.mark.parametrize(
    ("path", "command"),
    _cli_commands(),
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_help_lists_every_option(path: list[str], command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])

    assert result.exit_code == 0
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.opts[-1] in result.stdout, param.opts
    assert "--json" in result.stdout


def test_every_noun_is_registered() -> None:
    assert {"auth", "repo", "workspace", "issue", "land"} <= set(COMMANDS)
