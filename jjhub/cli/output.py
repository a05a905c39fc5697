"""How commands print: JSON, aligned tables, key-value views, a spinner.

Results go to stdout; progress and errors go to stderr, so `--json` output
stays machine-readable. Colours appear only when stdout is a terminal and
`NO_COLOR` is unset.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import click

STATUS_COLOURS = {
    "running": "green",
    "open": "green",
    "starting": "cyan",
    "pending": "cyan",
    "suspended": "yellow",
    "draft": "yellow",
    "failed": "red",
    "closed": "red",
    "stopped": "bright_black",
    "merged": "magenta",
}


def colour_enabled(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(stream.isatty()) and not os.environ.get("NO_COLOR")


def status_text(status: str) -> str:
    if not colour_enabled():
        return status
    return click.style(status, fg=STATUS_COLOURS.get(status))


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def info(message: str) -> None:
    """A short human-readable note on stderr (kept out of --json output)."""
    click.echo(message, err=True)


def ago(timestamp: str | None, now: datetime | None = None) -> str:
    """`3m ago` style age of an ISO 8601 timestamp."""
    moment = parse_time(timestamp)
    if moment is None:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return "just now" if seconds < 5 else f"{seconds}s ago"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "-"


def parse_time(timestamp: str | None) -> datetime | None:
    if not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


Column = tuple[str, Callable[[dict[str, Any]], str]]


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    """Rows under upper-case headers, columns padded to their widest cell."""
    cells = [[str(get(row)) for _, get in columns] for row in rows]
    headers = [name.upper() for name, _ in columns]
    widths = [
        max([len(headers[i])] + [len(_plain(r[i])) for r in cells])
        for i in range(len(columns))
    ]

    def line(values: list[str]) -> str:
        padded = [
            value + " " * (widths[i] - len(_plain(value)))
            for i, value in enumerate(values)
        ]
        return "  ".join(padded).rstrip()

    header = line(headers)
    click.echo(click.style(header, bold=True) if colour_enabled() else header)
    for row in cells:
        click.echo(line(row))


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`key: value` lines with the values aligned."""
    width = max((len(key) for key, _ in pairs), default=0)
    for key, value in pairs:
        shown = "-" if value is None or value == "" else value
        click.echo(f"{key + ':':<{width + 1}} {shown}")


def _plain(text: str) -> str:
    return click.unstyle(text)


class Spinner:
    """A spinner on stderr while something slow happens.

    On a terminal it animates and rewrites one line; elsewhere it prints the
    message once, so logs still show what the command waited for.
    """

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, message: str) -> None:
        self.message = message
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tty = sys.stderr.isatty()

    def update(self, message: str) -> None:
        if message == self.message:
            return
        self.message = message
        if not self._tty:
            click.echo(f"{message}...", err=True)

    def __enter__(self) -> Spinner:
        if self._tty:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        else:
            click.echo(f"{self.message}...", err=True)
        return self

    def _spin(self) -> None:
        for frame in itertools.cycle(self.FRAMES):
            sys.stderr.write(f"\r\x1b[2K{frame} {self.message}")
            sys.stderr.flush()
            if self._stop.wait(0.1):
                break
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
