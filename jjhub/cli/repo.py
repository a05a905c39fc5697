"""`jjhub repo`: create, view and list repositories."""

from __future__ import annotations

import click

from jjhub.cli.context import (
    CommandGroup,
    check_repo_name,
    client,
    json_option,
    repo_option,
    repository,
)
from jjhub.cli.output import ago, emit_json, fields, info, table


@click.group(cls=CommandGroup)
def repo() -> None:
    """Create, view and list repositories."""


@repo.command()
@click.argument("name")
@click.option("--org", metavar="ORG", help="Create it in this organisation.")
@click.option("--description", "-d", default="", help="A one-line description.")
@click.option(
    "--clone-url",
    metavar="URL",
    help="Upstream to check out in new workspaces (http(s), git, ssh or file URL).",
)
@json_option
def create(
    name: str, org: str | None, description: str, clone_url: str | None, as_json: bool
) -> None:
    """Create repository NAME, owned by you or by --org."""
    with client() as api:
        created = api.create_repo(
            name, org=org, description=description, clone_url=clone_url
        )
    if as_json:
        emit_json(created)
    else:
        click.echo(f"Created repository {created['full_name']}")


@repo.command()
@click.argument("name", metavar="[OWNER/REPO]", required=False)
@repo_option
@json_option
def view(name: str | None, repo: str | None, as_json: bool) -> None:
    """Show a repository (the argument, -R, or the current checkout's)."""
    full_name = check_repo_name(name) if name else repository(repo)
    with client() as api:
        found = api.get_repo(full_name)
    if as_json:
        emit_json(found)
        return
    fields(
        [
            ("Name", found["full_name"]),
            ("Description", found.get("description")),
            ("Clone URL", found.get("clone_url")),
            ("Private", "yes" if found.get("private") else "no"),
            ("Created", found.get("created_at")),
        ]
    )


@repo.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List the repositories you can use."""
    with client() as api:
        rows = api.list_repos()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        info("No repositories; create one with `jjhub repo create NAME`")
        return
    table(
        rows,
        [
            ("name", lambda r: r["full_name"]),
            ("description", lambda r: r.get("description") or ""),
            ("created", lambda r: ago(r.get("created_at"))),
        ],
    )
