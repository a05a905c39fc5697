"""`jjhub issue`: create, view and list issues."""

from __future__ import annotations

from typing import Any

import click

from jjhub.cli.context import CommandGroup, client, json_option, repo_option, repository
from jjhub.cli.output import ago, emit_json, fields, info, status_text, table

STATES = ("open", "closed", "all")


@click.group(cls=CommandGroup)
def issue() -> None:
    """Create, view and list issues."""


def _labels(row: dict[str, Any]) -> str:
    return ", ".join(label["name"] for label in row.get("labels", []))


@issue.command()
@click.option("--title", "-t", required=True, help="The issue's title.")
@click.option("--body", "-b", default="", help="The issue's description.")
@click.option(
    "--label",
    "-l",
    "labels",
    multiple=True,
    metavar="NAME",
    help="Add a label; repeat for more.",
)
@repo_option
@json_option
def create(
    title: str, body: str, labels: tuple[str, ...], repo: str | None, as_json: bool
) -> None:
    """Open a new issue."""
    full_name = repository(repo)
    with client() as api:
        created = api.create_issue(full_name, title, body, list(labels))
    if as_json:
        emit_json(created)
    else:
        click.echo(
            f"Created issue #{created['number']} in {full_name}: {created['title']}"
        )


@issue.command()
@click.argument("number", type=click.IntRange(min=1))
@repo_option
@json_option
def view(number: int, repo: str | None, as_json: bool) -> None:
    """Show issue NUMBER."""
    with client() as api:
        found = api.get_issue(repository(repo), number)
    if as_json:
        emit_json(found)
        return
    fields(
        [
            ("Issue", f"#{found['number']} {found['title']}"),
            ("State", status_text(found["state"])),
            ("Labels", _labels(found)),
            ("Author", found.get("author", {}).get("login")),
            ("Created", found.get("created_at")),
        ]
    )
    if found.get("body"):
        click.echo()
        click.echo(found["body"])


@issue.command("list")
@click.option(
    "--state",
    type=click.Choice(STATES),
    default="open",
    show_default=True,
    help="Which issues to list.",
)
@click.option(
    "--limit",
    default=30,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Most rows to show.",
)
@repo_option
@json_option
def list_(state: str, limit: int, repo: str | None, as_json: bool) -> None:
    """List issues, newest first."""
    full_name = repository(repo)
    with client() as api:
        rows = api.list_issues(full_name, state=state, limit=limit)
    if as_json:
        emit_json(rows)
    elif not rows:
        info(f"No {'' if state == 'all' else state + ' '}issues in {full_name}")
    else:
        table(
            rows,
            [
                ("#", lambda r: str(r["number"])),
                ("title", lambda r: r["title"]),
                ("state", lambda r: status_text(r["state"])),
                ("labels", _labels),
                ("created", lambda r: ago(r.get("created_at"))),
            ],
        )
