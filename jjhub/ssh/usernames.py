"""Parse the SSH usernames the gateway accepts.

`<vm_id>+<linux_user>:<token>` carries the token itself (no prompt), and
`<vm_id>+<linux_user>` expects the token as the password. `safe` is what may
be logged: the username without its token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MACHINE = re.compile(r"vm_[a-z0-9]{1,64}")
_LINUX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Login:
    machine_id: str
    linux_user: str
    token: str | None

    @property
    def safe(self) -> str:
        return f"{self.machine_id}+{self.linux_user}"


def parse(username: str) -> Login | None:
    """The login a username names, or None when it is not one of ours."""
    name, sep, token = username.partition(":")
    machine_id, plus, linux_user = name.partition("+")
    if not plus or not _MACHINE.fullmatch(machine_id):
        return None
    if not _LINUX_USER.fullmatch(linux_user):
        return None
    if sep and not token:
        return None
    return Login(machine_id, linux_user, token if sep else None)


def redact(username: str) -> str:
    """The username with any token cut off, for logs."""
    return username.partition(":")[0][:80]
