"""`jjhub workspace`: create, inspect, suspend, copy and delete workspaces.

Connecting (`ssh`), following events (`watch`) and starting work on an issue
(`issue`) live in `workspace_connect.py`.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from jjhub.cli.context import CommandGroup, client, json_option, repo_option, repository
from jjhub.cli.output import (
    Spinner,
    ago,
    emit_json,
    fields,
    info,
    parse_time,
    status_text,
    table,
)
from jjhub.cli.workspace_refs import resolve
from jjhub.client import Client

SIZES = ("small", "medium", "large")
STARTING = ("pending", "starting")
PERSISTENCE = ("ephemeral", "sticky", "persistent")


@click.group(cls=CommandGroup)
def workspace() -> None:
    """Cloud workspaces: create, connect, suspend, fork, snapshot, delete.

    Wherever a command takes an ID, it also accepts a unique prefix of the id
    (as tables print it) or the workspace's name (`primary`, `issue-42`).
    """


def _short(identifier: str) -> str:
    return identifier[:8]


def print_workspace(ws: dict[str, Any]) -> None:
    fields(
        [
            ("ID", ws["id"]),
            ("Name", ws.get("name")),
            ("Status", status_text(ws["status"])),
            ("Reason", ws.get("status_reason")),
            ("Machine", ws.get("freestyle_vm_id")),
            ("Runtime", ws.get("runtime")),
            ("Size", ws.get("size")),
            ("Persistence", ws.get("persistence")),
            ("Idle timeout", _seconds(ws.get("idle_timeout_seconds"))),
            ("Fork of", ws.get("parent_workspace_id")),
            ("Snapshot", ws.get("snapshot_id")),
            ("SSH host", ws.get("ssh_host")),
            ("Created", ws.get("created_at")),
            ("Suspended", ws.get("suspended_at")),
        ]
    )


def _seconds(value: int | None) -> str | None:
    return None if value is None else f"{value}s"


def workspace_table(rows: list[dict[str, Any]]) -> None:
    table(
        rows,
        [
            ("id", lambda r: r["id"]),
            ("name", lambda r: r.get("name", "")),
            ("status", lambda r: status_text(r["status"])),
            ("runtime", lambda r: r.get("runtime", "")),
            ("created", lambda r: ago(r.get("created_at"))),
        ],
    )


def uptime_seconds(ws: dict[str, Any], now: datetime | None = None) -> int:
    """Seconds since the machine started; 0 unless it is running."""
    if ws.get("status") != "running":
        return 0
    started = parse_time(ws.get("started_at") or ws.get("created_at"))
    if started is None:
        return 0
    return max(0, int(((now or datetime.now(UTC)) - started).total_seconds()))


@workspace.command()
@click.option("--name", metavar="NAME", help="A name for the new workspace.")
@click.option(
    "--snapshot", "snapshot_id", metavar="SNAPSHOT_ID", help="Restore from a snapshot."
)
@click.option("--size", type=click.Choice(SIZES), help="Machine size. [default: small]")
@click.option(
    "--persistence",
    type=click.Choice(PERSISTENCE),
    help="What happens when idle. [default: the repository's, or sticky]",
)
@click.option(
    "--idle-timeout",
    type=click.IntRange(min=0),
    metavar="SECONDS",
    help="Suspend after this many idle seconds (0 never).",
)
@repo_option
@json_option
def create(
    name: str | None,
    snapshot_id: str | None,
    size: str | None,
    persistence: str | None,
    idle_timeout: int | None,
    repo: str | None,
    as_json: bool,
) -> None:
    """Create a workspace, or resume your primary one if it exists."""
    full_name = repository(repo)
    with client() as api, Spinner("Starting workspace"):
        ws, created = api.create_workspace(
            full_name,
            name=name,
            snapshot_id=snapshot_id,
            size=size,
            persistence=persistence,
            idle_timeout_seconds=idle_timeout,
        )
        if ws["status"] in STARTING:
            ws = wait_started(api, full_name, ws["id"])
    if as_json:
        emit_json(ws)
        return
    verb = "Created" if created else "Resumed your primary"
    click.echo(f"{verb} workspace {ws['name']} ({ws['id']}), {ws['status']}")
    info(f"Connect with: jjhub workspace ssh {ws['id']} -R {full_name}")


def wait_started(api: Client, repo: str, workspace_id: str) -> dict[str, Any]:
    """Poll until the workspace leaves `pending`/`starting` (it may fail)."""
    while True:
        ws = api.get_workspace(repo, workspace_id)
        if ws["status"] not in STARTING:
            return ws
        time.sleep(2.0)


@workspace.command("list")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Most rows to show.",
)
@repo_option
@json_option
def list_(limit: int, repo: str | None, as_json: bool) -> None:
    """List your workspaces in the repository, newest first."""
    full_name = repository(repo)
    with client() as api:
        rows = api.list_workspaces(full_name, limit=limit)
    if as_json:
        emit_json(rows)
    elif not rows:
        info(f"No workspaces in {full_name}; create one with `jjhub workspace create`")
    else:
        workspace_table(rows)


@workspace.command()
@click.argument("workspace_id", metavar="ID")
@repo_option
@json_option
def view(workspace_id: str, repo: str | None, as_json: bool) -> None:
    """Show one workspace."""
    full_name = repository(repo)
    with client() as api:
        ws = api.get_workspace(full_name, resolve(api, full_name, workspace_id))
    if as_json:
        emit_json(ws)
    else:
        print_workspace(ws)


@workspace.command()
@click.argument("workspace_id", metavar="ID")
@repo_option
@json_option
def status(workspace_id: str, repo: str | None, as_json: bool) -> None:
    """Show a workspace's status and uptime."""
    full_name = repository(repo)
    with client() as api:
        ws = api.get_workspace(full_name, resolve(api, full_name, workspace_id))
    result = {
        "id": ws["id"],
        "status": ws["status"],
        "uptime_seconds": uptime_seconds(ws),
    }
    if as_json:
        emit_json(result)
    else:
        fields(
            [
                ("ID", ws["id"]),
                ("Status", status_text(ws["status"])),
                ("Uptime", f"{result['uptime_seconds']}s"),
            ]
        )


@workspace.command()
@click.argument("workspace_id", metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@repo_option
@json_option
def delete(workspace_id: str, yes: bool, repo: str | None, as_json: bool) -> None:
    """Delete a workspace's machine (it stays listed as stopped)."""
    full_name = repository(repo)
    if not yes and not sys.stdin.isatty():
        raise click.UsageError("pass --yes to delete without a prompt")
    with client() as api:
        workspace_id = resolve(api, full_name, workspace_id)
        if not yes:
            click.confirm(f"Delete workspace {workspace_id}?", abort=True, err=True)
        with Spinner("Deleting workspace"):
            api.delete_workspace(full_name, workspace_id)
    if as_json:
        emit_json({"status": "deleted", "id": workspace_id})
    else:
        click.echo(f"Deleted workspace {workspace_id}")


def _action(name: str, verb: str, doc: str) -> click.Command:
    @click.argument("workspace_id", metavar="ID")
    @repo_option
    @json_option
    def command(workspace_id: str, repo: str | None, as_json: bool) -> None:
        full_name = repository(repo)
        with client() as api:
            workspace_id = resolve(api, full_name, workspace_id)
            with Spinner(f"{verb} workspace"):
                ws = getattr(api, f"{name}_workspace")(full_name, workspace_id)
        if as_json:
            emit_json(ws)
        else:
            click.echo(f"Workspace {ws['id']} is {status_text(ws['status'])}")

    command.__doc__ = doc
    return workspace.command(name)(command)


suspend = _action("suspend", "Suspending", "Suspend a running workspace.")
resume = _action("resume", "Resuming", "Resume a suspended workspace.")
recover = _action(
    "recover", "Recovering", "Restart a failed workspace from its own disk."
)


@workspace.command()
@click.argument("workspace_id", metavar="ID")
@click.option("--name", metavar="NAME", help="Name of the fork.")
@click.option(
    "--count",
    type=click.IntRange(1, 10),
    help="Make this many forks (prints a list).",
)
@repo_option
@json_option
def fork(
    workspace_id: str,
    name: str | None,
    count: int | None,
    repo: str | None,
    as_json: bool,
) -> None:
    """Copy a running or suspended workspace into new running ones."""
    full_name = repository(repo)
    with client() as api:
        workspace_id = resolve(api, full_name, workspace_id)
        with Spinner("Forking workspace"):
            forks = api.fork_workspace(full_name, workspace_id, name=name, count=count)
    if as_json:
        emit_json(forks if count is not None else forks[0])
    else:
        workspace_table(forks)


@workspace.command()
@click.argument("workspace_id", metavar="ID")
@click.option("--name", metavar="NAME", help="Name of the snapshot.")
@repo_option
@json_option
def snapshot(
    workspace_id: str, name: str | None, repo: str | None, as_json: bool
) -> None:
    """Take a durable snapshot of a workspace."""
    full_name = repository(repo)
    with client() as api:
        workspace_id = resolve(api, full_name, workspace_id)
        with Spinner("Taking snapshot"):
            snap = api.snapshot_workspace(full_name, workspace_id, name=name)
    if as_json:
        emit_json(snap)
    else:
        click.echo(f"Created snapshot {snap['name']} ({snap['id']})")
        info(f"Restore with: jjhub workspace create --snapshot {snap['id']}")


@workspace.command()
@click.argument("workspace_id", metavar="[ID]", required=False)
@repo_option
@json_option
def snapshots(workspace_id: str | None, repo: str | None, as_json: bool) -> None:
    """List snapshots, all or those of workspace ID."""
    full_name = repository(repo)
    with client() as api:
        if workspace_id is not None:
            workspace_id = resolve(api, full_name, workspace_id)
        rows = api.list_snapshots(full_name, workspace_id=workspace_id)
    if as_json:
        emit_json(rows)
    elif not rows:
        info("No snapshots")
    else:
        table(
            rows,
            [
                ("id", lambda r: r["id"]),
                ("name", lambda r: r.get("name", "")),
                ("workspace", lambda r: _short(r.get("workspace_id", ""))),
                ("created", lambda r: ago(r.get("created_at"))),
            ],
        )


# Registered here so `jjhub workspace --help` lists them with the rest.
from jjhub.cli import workspace_connect  # noqa: E402

workspace.add_command(workspace_connect.ssh)
workspace.add_command(workspace_connect.watch)
workspace.add_command(workspace_connect.issue)
