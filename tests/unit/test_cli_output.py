"""Tables, ages, uptime, SSE parsing and the ssh command line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jjhub.cli.output import ago, table
from jjhub.cli.workspace import uptime_seconds
from jjhub.cli.workspace_connect import ssh_argv
from jjhub.client import parse_events

NOW = datetime(2026, 3, 8, 18, 10, 42, tzinfo=UTC)


def test_table_aligns_columns_under_headers(capsys: pytest.CaptureFixture[str]) -> None:
    table(
        [{"a": "x", "b": "long value"}, {"a": "longer", "b": "y"}],
        [("first", lambda r: r["a"]), ("second", lambda r: r["b"])],
    )

    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "FIRST   SECOND",
        "x       long value",
        "longer  y",
    ]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-03-08T18:10:40Z", "just now"),
        ("2026-03-08T18:10:00Z", "42s ago"),
        ("2026-03-08T18:00:42Z", "10m ago"),
        ("2026-03-08T15:10:42+00:00", "3h ago"),
        ("2026-03-06T18:10:42Z", "2d ago"),
        (None, "-"),
    ],
)
def test_ago_is_short_and_relative(stamp: str | None, expected: str) -> None:
    assert ago(stamp, NOW) == expected


def test_uptime_counts_from_start_while_running() -> None:
    ws = {"status": "running", "created_at": "2026-03-08T18:00:42Z"}

    assert uptime_seconds(ws, NOW) == 600


def test_uptime_is_zero_unless_running() -> None:
    ws = {"status": "suspended", "created_at": "2026-03-08T18:00:42Z"}

    assert uptime_seconds(ws, NOW) == 0


def test_parse_events_skips_keepalives_and_decodes_data() -> None:
    lines = [
        "id: 1",
        "event: workspace.status",
        'data: {"workspace_id": "w", "status": "running"}',
        "",
        ": keep-alive",
        "",
        "id: 2",
        "event: workspace.status",
        'data: {"workspace_id": "w", "status": "suspended"}',
        "",
    ]

    events = list(parse_events(iter(lines)))

    assert [(e.id, e.event, e.data["status"]) for e in events] == [
        ("1", "workspace.status", "running"),
        ("2", "workspace.status", "suspended"),
    ]


INFO = {
    "vm_id": "vm_abc",
    "username": "developer",
    "access_token": "ws_tok",
    "host": "127.0.0.1",
    "port": 2222,
}


def test_ssh_argv_puts_the_token_in_the_user_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))

    argv = ssh_argv(INFO, ())

    assert argv[:3] == ["ssh", "-p", "2222"]
    assert f"UserKnownHostsFile={tmp_path}/jjhub/known_hosts" in argv
    assert argv[-1] == "vm_abc+developer:ws_tok@127.0.0.1"


def test_ssh_argv_quotes_a_command_of_several_words(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))

    assert ssh_argv(INFO, ("echo hi | wc -c",))[-1] == "echo hi | wc -c"
    assert ssh_argv(INFO, ("bash", "-c", "echo a b"))[-1] == "bash -c 'echo a b'"
