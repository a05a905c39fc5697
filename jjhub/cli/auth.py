"""`jjhub auth`: log in with a token, show who you are, log out."""

from __future__ import annotations

import os
import sys

import click

from jjhub.cli import config_file
from jjhub.cli.context import CommandGroup, NotLoggedIn, json_option
from jjhub.cli.output import emit_json, fields, info
from jjhub.client import ApiError, Client


@click.group(cls=CommandGroup)
def auth() -> None:
    """Log in to a jjhub server and manage the saved token."""


def _read_token() -> str:
    """The token from stdin when piped, else from a hidden prompt."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    return str(click.prompt("Token", hide_input=True, err=True)).strip()


@auth.command()
@click.option(
    "--url",
    "api_url",
    metavar="URL",
    help="The server's API URL. [default: JJHUB_API_URL, the saved URL, "
    f"or {config_file.DEFAULT_API_URL}]",
)
@json_option
def login(api_url: str | None, as_json: bool) -> None:
    """Save a token after checking it with the server.

    The token is read from stdin when it is piped (`echo $T | jjhub auth
    login`), otherwise from a prompt. Create one on the server with
    `jjhub admin token create USER`.
    """
    url = (api_url or config_file.credentials().api_url).rstrip("/")
    token = _read_token()
    if not token:
        raise click.UsageError("no token given on stdin or at the prompt")

    with Client(url, token) as api:
        try:
            user = api.current_user()
        except ApiError as error:
            if error.status == 401:
                raise click.ClickException(
                    f"the server at {url} rejected this token ({error.message}); "
                    "check it, or create one with `jjhub admin token create USER`"
                ) from None
            raise

    path = config_file.save(
        {"api_url": url, "token": token, "username": user.get("login")}
    )
    if as_json:
        emit_json({"api_url": url, "username": user.get("login"), "config": str(path)})
    else:
        info(f"Logged in to {url} as {user.get('login')}")


@auth.command()
@json_option
def status(as_json: bool) -> None:
    """Show the server, the user and where the token comes from."""
    creds = config_file.credentials()
    if not creds.token:
        raise NotLoggedIn()
    with Client(creds.api_url, creds.token) as api:
        user = api.current_user()
    source = (
        "JJHUB_TOKEN" if creds.token_source == "env" else str(config_file.config_path())
    )
    if as_json:
        emit_json(
            {
                "api_url": creds.api_url,
                "username": user.get("login"),
                "token_source": creds.token_source,
                "logged_in": True,
            }
        )
        return
    fields(
        [
            ("Server", creds.api_url),
            ("User", user.get("login")),
            ("Token", f"{creds.token[:10]}… (from {source})"),
        ]
    )


@auth.command()
@json_option
def logout(as_json: bool) -> None:
    """Forget the saved token (JJHUB_TOKEN, if set, still applies)."""
    saved = config_file.load()
    had_token = bool(saved.pop("token", None))
    saved.pop("username", None)
    if had_token:
        config_file.save(saved)
    url = saved.get("api_url", config_file.DEFAULT_API_URL)
    if as_json:
        emit_json({"status": "logged_out" if had_token else "not_logged_in"})
    else:
        info(f"Logged out of {url}" if had_token else "Not logged in")
    if os.environ.get("JJHUB_TOKEN"):
        info("JJHUB_TOKEN is set in the environment and still applies")
