"""What every CLI command shares: the client, `-R/--repo`, `--json`, errors.

The repository comes from `-R OWNER/REPO` or from the current checkout's
remote (jj first, then git). `CommandGroup` turns client errors into one
line on stderr and a non-zero exit, in this one place.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import click

from jjhub.cli import config_file
from jjhub.client import ApiError, Client, ClientError, Unreachable

F = TypeVar("F", bound=Callable[..., Any])

NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
REPO_NAME = re.compile(rf"^{NAME}/{NAME}$")
EXIT_API_ERROR = 1
EXIT_NOT_LOGGED_IN = 4


class NotLoggedIn(click.ClickException):
    exit_code = EXIT_NOT_LOGGED_IN

    def __init__(self) -> None:
        super().__init__("not logged in: run `jjhub auth login` (or set JJHUB_TOKEN)")


class CommandGroup(click.Group):
    """A noun's group; client errors become one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as error:
            raise click.ClickException(describe_api_error(error)) from None
        except Unreachable as error:
            raise click.ClickException(
                f"{error.message}; is the server running? "
                "Set JJHUB_API_URL or run `jjhub auth login --url URL`"
            ) from None
        except ClientError as error:
            raise click.ClickException(error.message) from None


def describe_api_error(error: ApiError) -> str:
    text = error.message
    if error.status == 401:
        return f"{text}: the token was rejected; run `jjhub auth login`"
    fields = [e.get("field") for e in error.errors if e.get("field")]
    if fields:
        text += f" ({', '.join(str(f) for f in fields)})"
    return text


def client() -> Client:
    """A client for the configured server; refuses early without a token."""
    creds = config_file.credentials()
    if not creds.token:
        raise NotLoggedIn()
    return Client(creds.api_url, creds.token)


# -- options -------------------------------------------------------------------

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON."
)
repo_option = click.option(
    "-R",
    "--repo",
    "repo",
    metavar="OWNER/REPO",
    help="Repository to use (default: from the current checkout's remote).",
)


def repository(value: str | None) -> str:
    """`OWNER/REPO` from the option, else from the current checkout."""
    if value:
        return check_repo_name(value)
    detected = detect_repo(Path.cwd())
    if detected is None:
        raise click.UsageError(
            "no repository: pass -R OWNER/REPO or run inside a git or jj "
            "checkout whose remote points at OWNER/REPO"
        )
    return detected


def check_repo_name(value: str) -> str:
    cleaned = value.strip().removesuffix(".git").strip("/")
    if not REPO_NAME.match(cleaned):
        raise click.BadParameter(
            f"{value!r} is not a repository name; use OWNER/REPO, e.g. alice/webapp",
            param_hint="'-R' / '--repo'",
        )
    return cleaned


# -- detection from the checkout -------------------------------------------------


def parse_remote_url(url: str) -> str | None:
    """`OWNER/REPO` from an https, ssh, scp-like or file remote URL."""
    url = url.strip()
    if not url:
        return None
    if "://" in url:
        path = urlparse(url).path
    elif re.match(r"^[^/]+@[^/:]+:", url) or re.match(r"^[A-Za-z0-9.-]+:[^/]", url):
        path = url.split(":", 1)[1]
    else:
        path = url
    parts = [p for p in path.removesuffix("/").removesuffix(".git").split("/") if p]
    if len(parts) < 2:
        return None
    candidate = f"{parts[-2]}/{parts[-1]}"
    return candidate if REPO_NAME.match(candidate) else None


def _run(argv: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_remotes(cwd: Path, git_dir: Path | None = None) -> list[tuple[str, str]]:
    if shutil.which("git") is None:
        return []
    argv = ["git"]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    out = _run([*argv, "config", "--get-regexp", r"^remote\..*\.url$"], cwd)
    remotes = []
    for line in (out or "").splitlines():
        key, _, url = line.partition(" ")
        remotes.append((key.removeprefix("remote.").removesuffix(".url"), url))
    return remotes


def _jj_store(cwd: Path) -> Path | None:
    """The git store of the jj workspace around `cwd`, read from `.jj/`."""
    for directory in (cwd, *cwd.parents):
        repo = directory / ".jj" / "repo"
        if not repo.exists():
            continue
        if repo.is_file():  # a secondary workspace points at the main repo
            repo = (directory / ".jj" / repo.read_text().strip()).resolve()
        target = repo / "store" / "git_target"
        if target.is_file():
            return (target.parent / target.read_text().strip()).resolve()
        return None
    return None


def _jj_remotes(cwd: Path) -> list[tuple[str, str]]:
    if shutil.which("jj"):
        out = _run(["jj", "git", "remote", "list"], cwd)
        if out is not None:
            return [
                (name, url)
                for name, _, url in (line.partition(" ") for line in out.splitlines())
                if url
            ]
    store = _jj_store(cwd)
    return _git_remotes(cwd, store) if store else []


def detect_repo(cwd: Path) -> str | None:
    """The repository the checkout at `cwd` points at, preferring `origin`."""
    remotes = _jj_remotes(cwd) or _git_remotes(cwd)
    ranked = sorted(remotes, key=lambda r: {"origin": 0, "upstream": 1}.get(r[0], 2))
    for _, url in ranked:
        found = parse_remote_url(url)
        if found:
            return found
    return None
