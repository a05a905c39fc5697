"""The `jjhub` command: one module per noun, imported only when used."""

from __future__ import annotations

import importlib

import click

from jjhub import __version__

# noun -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "server": ("jjhub.cli.server", "server", "Run the workspace server."),
    "admin": ("jjhub.cli.admin", "admin", "Manage users, tokens and organisations."),
    "image": ("jjhub.cli.image", "image", "Build the base images ahead of time."),
    "auth": ("jjhub.cli.auth", "auth", "Log in to a server, show status, log out."),
    "repo": ("jjhub.cli.repo", "repo", "Create, view and list repositories."),
    "workspace": ("jjhub.cli.workspace", "workspace", "Create and use workspaces."),
    "issue": ("jjhub.cli.issue", "issue", "Create, view and list issues."),
    "land": ("jjhub.cli.land", "land", "Create, view and list landing requests."),
}


class LazyGroup(click.Group):
    """Loads a subcommand's module on use, so `jjhub --help` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(
        self, ctx: click.Context, formatter: click.HelpFormatter
    ) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jjhub")
def cli() -> None:
    """jjhub: cloud workspaces for your repositories.

    Log in with `jjhub auth login`, then `jjhub workspace ssh -R OWNER/REPO`.
    """


def main() -> None:
    cli()
