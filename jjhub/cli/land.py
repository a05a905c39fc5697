"""`jjhub land`: create, view and list landing requests."""

from __future__ import annotations

from typing import Any

import click

from jjhub.cli.context import CommandGroup, client, json_option, repo_option, repository
from jjhub.cli.output import ago, emit_json, fields, info, status_text, table

STATES = ("open", "closed", "merged", "all")


@click.group(cls=CommandGroup)
def land() -> None:
    """Create, view and list landing requests."""


def _state(row: dict[str, Any]) -> str:
    text = status_text(row["state"])
    return f"{text} (draft)" if row.get("draft") else text


@land.command()
@click.option("--title", "-t", required=True, help="The landing request's title.")
@click.option(
    "--body", "-b", default="", help="Its description; `Closes #N` links an issue."
)
@click.option(
    "--target",
    default="main",
    show_default=True,
    metavar="BOOKMARK",
    help="The bookmark to land onto.",
)
@click.option(
    "--change",
    "changes",
    multiple=True,
    metavar="CHANGE_ID",
    help="A jj change id to land; repeat for more.",
)
@click.option("--draft", is_flag=True, help="Open it as a draft.")
@repo_option
@json_option
def create(
    title: str,
    body: str,
    target: str,
    changes: tuple[str, ...],
    draft: bool,
    repo: str | None,
    as_json: bool,
) -> None:
    """Open a landing request onto a bookmark."""
    full_name = repository(repo)
    with client() as api:
        created = api.create_landing(
            full_name,
            title,
            target_bookmark=target,
            body=body,
            change_ids=list(changes),
            draft=draft,
        )
    if as_json:
        emit_json(created)
    else:
        kind = "draft landing request" if created["draft"] else "landing request"
        click.echo(
            f"Created {kind} #{created['number']} onto {target}: {created['title']}"
        )


@land.command()
@click.argument("number", type=click.IntRange(min=1))
@repo_option
@json_option
def view(number: int, repo: str | None, as_json: bool) -> None:
    """Show landing request NUMBER."""
    with client() as api:
        found = api.get_landing(repository(repo), number)
    if as_json:
        emit_json(found)
        return
    closes = ", ".join(f"#{n}" for n in found.get("closes_issues", []))
    fields(
        [
            ("Landing", f"#{found['number']} {found['title']}"),
            ("State", _state(found)),
            ("Target", found["target_bookmark"]),
            ("Changes", ", ".join(found.get("change_ids", []))),
            ("Closes", closes),
            ("Author", found.get("author", {}).get("login")),
            ("Created", found.get("created_at")),
        ]
    )
    if found.get("body"):
        click.echo()
        click.echo(found["body"])


@land.command("list")
@click.option(
    "--state",
    type=click.Choice(STATES),
    default="open",
    show_default=True,
    help="Which landing requests to list.",
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
    """List landing requests, newest first."""
    full_name = repository(repo)
    with client() as api:
        rows = api.list_landings(full_name, state=state, limit=limit)
    if as_json:
        emit_json(rows)
    elif not rows:
        info(
            f"No {'' if state == 'all' else state + ' '}landing requests in {full_name}"
        )
    else:
        table(
            rows,
            [
                ("#", lambda r: str(r["number"])),
                ("title", lambda r: r["title"]),
                ("state", _state),
                ("target", lambda r: r["target_bookmark"]),
                ("created", lambda r: ago(r.get("created_at"))),
            ],
        )
