"""The real API app served by uvicorn in a thread, without workspaces.

For tests of the forge side (users, repositories, issues, landing requests)
and of CLI commands that need no machine. Workspace routes are not usable.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import uvicorn

from jjhub.api.app import create_app
from jjhub.config import Settings
from jjhub.forge import accounts, repos
from jjhub.services import Services
from jjhub.store.db import Database, open_database


@dataclass
class ForgeApi:
    url: str
    db: Database

    def create_user(self, name: str) -> str:
        """A user and a token for them."""
        with self.db.session() as session:
            return accounts.create_token(session, accounts.create_user(session, name))

    def create_repo(self, owner: str, name: str) -> None:
        with self.db.session() as session:
            repos.create_repository(session, accounts.get_user(session, owner), name)


@contextmanager
def serve_forge_api(data_dir: Path) -> Iterator[ForgeApi]:
    db = open_database(data_dir)
    settings = Settings(data_dir=data_dir, rate_limit_per_minute=100_000)
    workspaces = SimpleNamespace(runtime=SimpleNamespace(name="none"))
    app = create_app(Services(settings, db, workspaces))  # type: ignore[arg-type]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the API server thread died")
        time.sleep(0.02)
    try:
        yield ForgeApi(f"http://127.0.0.1:{port}", db)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        db.dispose()
