"""`jjhub admin`: users, tokens and organisations, straight on the data directory.

These work whether or not the server runs (SQLite in WAL mode takes both).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from jjhub import config
from jjhub.errors import DomainError
from jjhub.forge import accounts, repos
from jjhub.store.db import open_database

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="The server's data directory. [env JJHUB_DATA_DIR; default /var/lib/jjhub]",
)


def _database(data_dir: Path | None):  # type: ignore[no-untyped-def]
    settings = config.from_environment().with_overrides(data_dir=data_dir)
    return open_database(settings.data_dir, settings.database_url)


def _fail(error: DomainError) -> None:
    raise click.ClickException(error.message)


@click.group()
def admin() -> None:
    """Manage users, tokens and organisations (run on the server host)."""


@admin.group()
def user() -> None:
    """Users."""


@user.command("create")
@click.argument("name")
@click.option(
    "--admin", "is_admin", is_flag=True, help="Make the user an administrator."
)
@click.option(
    "--token/--no-token", default=False, help="Also create and print an API token."
)
@data_dir_option
def user_create(name: str, is_admin: bool, token: bool, data_dir: Path | None) -> None:
    """Create user NAME."""
    db = _database(data_dir)
    try:
        with db.session() as session:
            created = accounts.create_user(session, name, is_admin=is_admin)
            text = accounts.create_token(session, created) if token else None
    except DomainError as error:
        _fail(error)
    click.echo(f"created user {name}" + (" (admin)" if is_admin else ""))
    if text:
        click.echo(text)


@admin.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.argument("username")
@click.option("--name", default="cli", show_default=True, help="A label for the token.")
@data_dir_option
def token_create(username: str, name: str, data_dir: Path | None) -> None:
    """Create an API token for USERNAME and print it (shown only once)."""
    db = _database(data_dir)
    try:
        with db.session() as session:
            text = accounts.create_token(
                session, accounts.get_user(session, username), name
            )
    except DomainError as error:
        _fail(error)
    click.echo(text)


@admin.group()
def org() -> None:
    """Organisations."""


@org.command("create")
@click.argument("name")
@click.option(
    "--member", "members", multiple=True, help="A member's user name; repeat for more."
)
@data_dir_option
def org_create(name: str, members: tuple[str, ...], data_dir: Path | None) -> None:
    """Create organisation NAME with its members."""
    db = _database(data_dir)
    try:
        with db.session() as session:
            accounts.create_org(session, name, list(members))
    except DomainError as error:
        _fail(error)
    click.echo(f"created organisation {name} with {len(members)} member(s)")


@admin.command("collaborator")
@click.argument("repository", metavar="OWNER/REPO")
@click.argument("username")
@data_dir_option
def collaborator(repository: str, username: str, data_dir: Path | None) -> None:
    """Give USERNAME access to OWNER/REPO."""
    owner, _, name = repository.partition("/")
    db = _database(data_dir)
    try:
        with db.session() as session:
            from sqlalchemy import select

            from jjhub.store.models import Repository

            repo = session.scalar(
                select(Repository).where(
                    Repository.owner == owner, Repository.name == name
                )
            )
            if repo is None:
                raise click.ClickException(f"repository {repository} not found")
            repos.add_collaborator(session, repo, username)
    except DomainError as error:
        _fail(error)
    click.echo(json.dumps({"repository": repository, "collaborator": username}))
