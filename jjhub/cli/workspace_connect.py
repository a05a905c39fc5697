"""Connecting to workspaces: `ssh`, `watch` and `issue`.

`ssh` runs the stock OpenSSH client against the gateway, with a known-hosts
file of its own under the XDG state directory, and returns its exit code.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

import click

from jjhub.cli import config_file
from jjhub.cli.context import client, json_option, repo_option, repository
from jjhub.cli.output import Spinner, emit_json, info, status_text
from jjhub.cli.workspace_refs import resolve
from jjhub.client import ApiError, Client, Unreachable

ENDED = ("stopped", "failed")
STARTING = ("pending", "starting")
DEFAULT_WAIT_SECONDS = 300


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self.end


# -- choosing and waking a workspace ----------------------------------------------


def pick_workspace(api: Client, repo: str) -> dict[str, Any] | None:
    """A running workspace, else the newest that is not ended, else None."""
    rows = api.list_workspaces(repo)
    running = [w for w in rows if w["status"] == "running"]
    if running:
        return running[0]
    alive = [w for w in rows if w["status"] not in ENDED]
    return alive[0] if alive else None


def _ended(ws: dict[str, Any]) -> click.ClickException:
    reason = f": {ws['status_reason']}" if ws.get("status_reason") else ""
    hint = (
        f"; run `jjhub workspace recover {ws['id']}`"
        if ws["status"] == "failed"
        else "; create a new one with `jjhub workspace create`"
    )
    return click.ClickException(f"workspace {ws['id']} is {ws['status']}{reason}{hint}")


def wait_ssh_ready(
    api: Client, repo: str, workspace_id: str, deadline: Deadline
) -> tuple[dict[str, Any], bool]:
    """SSH info once the workspace runs and the gateway port answers.

    Resumes a suspended workspace and retries while it starts (a 409 from a
    starting workspace is retried too). Returns the info and whether the
    workspace had to be woken or waited for.
    """
    woke = False
    with Spinner("Waiting for the workspace") as spinner:
        while True:
            ws = api.get_workspace(repo, workspace_id)
            status = ws["status"]
            if status in ENDED:
                raise _ended(ws)
            try:
                if status == "suspended":
                    spinner.update("Resuming the workspace")
                    api.resume_workspace(repo, workspace_id)
                    woke = True
                    continue
                if status == "running":
                    info_ = api.ssh_info(repo, workspace_id)
                    spinner.update("Waiting for SSH")
                    if _port_open(info_["host"], int(info_["port"])):
                        return info_, woke
            except ApiError as error:
                if error.status != 409:
                    raise
            woke = True
            if deadline.passed():
                raise click.ClickException(
                    f"workspace {workspace_id} was not ready for SSH within "
                    f"{deadline.seconds:.0f}s (status {status}); try again or "
                    "check `jjhub workspace view`"
                )
            spinner.update(f"Waiting for the workspace ({status})")
            time.sleep(1.5)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


# -- running ssh ---------------------------------------------------------------


def ssh_argv(info_: dict[str, Any], command: tuple[str, ...]) -> list[str]:
    """The OpenSSH command line for the gateway, token in the user name."""
    user = f"{info_['vm_id']}+{info_['username']}:{info_['access_token']}"
    argv = [
        "ssh",
        "-p",
        str(info_["port"]),
        "-o",
        f"UserKnownHostsFile={config_file.known_hosts_path()}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "CheckHostIP=no",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ServerAliveInterval=30",
        f"{user}@{info_['host']}",
    ]
    if command:
        # One argument is a shell line; several are quoted so each stays a word.
        argv.append(command[0] if len(command) == 1 else shlex.join(command))
    return argv


def run_ssh(argv: list[str]) -> int:
    """Run ssh in the foreground; Ctrl-C goes to it, not to us."""
    if shutil.which(argv[0]) is None:
        raise click.ClickException(
            "the `ssh` client is not installed; install OpenSSH (e.g. openssh-client)"
        )
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call(argv)
    finally:
        signal.signal(signal.SIGINT, previous)


def probe_ssh(argv: list[str]) -> bool:
    """Whether the gateway lets us in and runs `true` (no prompts).

    `argv` is an `ssh_argv` without a command: its last item is the target.
    """
    options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    probe = [*argv[:-1], *options, argv[-1], "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def connect(
    api: Client,
    repo: str,
    workspace_id: str,
    command: tuple[str, ...],
    wait_seconds: float,
) -> int:
    deadline = Deadline(wait_seconds)
    info_, woke = wait_ssh_ready(api, repo, workspace_id, deadline)
    destination_only = ssh_argv(info_, ())
    if woke:
        # A machine that just started may take a moment to accept sessions.
        with Spinner("Waiting for SSH"):
            while not probe_ssh(destination_only):
                if deadline.passed():
                    raise click.ClickException(
                        f"SSH to workspace {workspace_id} did not succeed within "
                        f"{wait_seconds:.0f}s; try `jjhub workspace ssh` again"
                    )
                time.sleep(1.5)
                info_ = api.ssh_info(repo, workspace_id)
                destination_only = ssh_argv(info_, ())
    return run_ssh(ssh_argv(info_, command))


wait_option = click.option(
    "--wait",
    "wait_seconds",
    default=DEFAULT_WAIT_SECONDS,
    show_default=True,
    type=click.IntRange(1, 3600),
    metavar="SECONDS",
    help="How long to wait for the workspace and SSH to be ready.",
)


class SshCommand(click.Command):
    """Everything after `--` is the remote command, even without an ID."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["jjhub.remote_command"] = tuple(args[cut + 1 :])
            args = args[:cut]
        return super().parse_args(ctx, args)


@click.command(cls=SshCommand)
@click.argument("workspace_id", metavar="[ID]", required=False)
@click.argument("command", nargs=-1, metavar="[-- COMMAND...]")
@wait_option
@repo_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the SSH connection info as JSON instead of connecting "
    "(ignored with a COMMAND).",
)
def ssh(
    workspace_id: str | None,
    command: tuple[str, ...],
    wait_seconds: int,
    repo: str | None,
    as_json: bool,
) -> None:
    """Connect to a workspace with ssh, or run COMMAND there.

    Without ID it picks a running workspace, else the newest one, else
    creates one. Waits until SSH is ready, then runs the stock `ssh` client
    and exits with its exit code (the remote command's).
    """
    command = click.get_current_context().meta.get("jjhub.remote_command", command)
    full_name = repository(repo)
    with client() as api:
        if workspace_id is None:
            chosen = pick_workspace(api, full_name)
            if chosen is None:
                with Spinner("Creating a workspace"):
                    chosen, _ = api.create_workspace(full_name)
                info(f"Created workspace {chosen['name']} ({chosen['id']})")
            workspace_id = chosen["id"]
        else:
            workspace_id = resolve(api, full_name, workspace_id)
        if as_json and not command:
            info_, _ = wait_ssh_ready(
                api, full_name, workspace_id, Deadline(wait_seconds)
            )
            emit_json(info_)
            return
        code = connect(api, full_name, workspace_id, command, wait_seconds)
    raise SystemExit(code)


@click.command()
@click.argument("workspace_id", metavar="ID")
@repo_option
@json_option
def watch(workspace_id: str, repo: str | None, as_json: bool) -> None:
    """Print one line per status change until the workspace stops or fails."""
    full_name = repository(repo)
    last = None
    attempts = 0
    with client() as api:
        workspace_id = resolve(api, full_name, workspace_id)
        while True:
            try:
                for event in api.stream_workspace(full_name, workspace_id):
                    attempts = 0
                    status = event.data.get("status")
                    if not isinstance(status, str) or status == last:
                        continue
                    last = status
                    _print_status(workspace_id, status, as_json)
                    if status in ENDED:
                        return
            except Unreachable:
                if attempts >= 5:
                    raise
            # The stream ended without a final status: reconnect shortly.
            attempts += 1
            time.sleep(min(2**attempts, 10))


def _print_status(workspace_id: str, status: str, as_json: bool) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if as_json:
        click.echo(
            json.dumps({"workspace_id": workspace_id, "status": status, "at": stamp})
        )
    else:
        click.echo(f"{stamp}  {workspace_id}  {status_text(status)}")


# -- starting work on an issue ---------------------------------------------------


def workspace_for_issue(api: Client, repo: str, number: int) -> dict[str, Any]:
    """The live workspace named `issue-N` (resumed), or a new one.

    A named create does exactly that on the server, beside any primary.
    """
    name = f"issue-{number}"
    with Spinner(f"Starting workspace {name}"):
        ws, _ = api.create_workspace(repo, name=name)
    return ws


def landing_for_issue(
    api: Client, repo: str, issue_: dict[str, Any], target: str, ws: dict[str, Any]
) -> dict[str, Any]:
    """An open draft that closes the issue, reusing one made earlier."""
    number = issue_["number"]
    for landing in api.list_landings(repo, state="open"):
        if landing.get("draft") and number in landing.get("closes_issues", []):
            if landing.get("target_bookmark") == target:
                return landing
    body = (
        f"Closes #{number}\n\n"
        f"Work in progress in workspace `{ws['name']}` ({ws['id']})."
    )
    return api.create_landing(
        repo, issue_["title"], target_bookmark=target, body=body, draft=True
    )


@click.command()
@click.argument("number", type=click.IntRange(min=1))
@click.option(
    "--target",
    default="main",
    show_default=True,
    metavar="BOOKMARK",
    help="Bookmark the landing request targets.",
)
@click.option(
    "--no-connect", is_flag=True, help="Set everything up but do not open ssh."
)
@wait_option
@repo_option
@json_option
def issue(
    number: int,
    target: str,
    no_connect: bool,
    wait_seconds: int,
    repo: str | None,
    as_json: bool,
) -> None:
    """Start work on an issue: a workspace issue-N and a draft landing request.

    Then connects with ssh unless --no-connect.
    """
    full_name = repository(repo)
    with client() as api:
        found = api.get_issue(full_name, number)
        ws = workspace_for_issue(api, full_name, number)
        landing = landing_for_issue(api, full_name, found, target, ws)
        if as_json:
            emit_json({"issue": found, "workspace": ws, "landing_request": landing})
        else:
            click.echo(f"Issue #{found['number']}: {found['title']}")
            click.echo(
                f"Workspace {ws['name']} ({ws['id']}) is {status_text(ws['status'])}"
            )
            click.echo(
                f"Draft landing request #{landing['number']} onto {target}: "
                f"{landing['title']}"
            )
        if no_connect:
            return
        code = connect(api, full_name, ws["id"], (), wait_seconds)
    raise SystemExit(code)
