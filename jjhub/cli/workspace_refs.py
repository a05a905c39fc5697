"""Naming a workspace on the command line: its id, a unique id prefix, or its name.

Tables print ids shortened to 8 characters and people remember names
(`primary`, `issue-42`), so every command that takes an ID accepts all three,
the way `docker` and `git` accept short forms. A full id goes to the server
as it is; anything else is matched against the repository's workspace list.
"""

from __future__ import annotations

import re

import click

from jjhub.client import JSON, Client

FULL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_LISTED = 1000


def resolve(api: Client, repo: str, ref: str) -> str:
    """The full id of the workspace that `ref` names in `repo`.

    Names match workspaces that are not deleted first (a name such as
    `primary` comes back after each delete), then deleted ones; an id prefix
    matches any workspace. More than one match is an error listing them.
    """
    if FULL_ID.match(ref):
        return ref
    rows = api.list_workspaces(repo, limit=MAX_LISTED)
    named = [r for r in rows if r.get("name") == ref]
    live = [r for r in named if r.get("status") != "stopped"]
    for candidates in (live, named, [r for r in rows if r["id"].startswith(ref)]):
        if len(candidates) == 1:
            return str(candidates[0]["id"])
        if len(candidates) > 1:
            raise click.ClickException(_ambiguous(ref, candidates))
    raise click.ClickException("workspace not found")


def _ambiguous(ref: str, candidates: list[JSON]) -> str:
    listed = ", ".join(
        f"{r['id']} ({r.get('name', '')}, {r.get('status', '')})"
        for r in candidates[:5]
    )
    more = f" and {len(candidates) - 5} more" if len(candidates) > 5 else ""
    return f"{ref!r} matches several workspaces: {listed}{more}; give the full id"
