"""Workspace statuses and which operations each one allows."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    SUSPENDED = "suspended"
    STOPPED = "stopped"
    FAILED = "failed"


class Persistence(StrEnum):
    EPHEMERAL = "ephemeral"
    STICKY = "sticky"
    PERSISTENT = "persistent"


LIVE = (Status.PENDING, Status.STARTING, Status.RUNNING, Status.SUSPENDED)
ENDED = (Status.STOPPED, Status.FAILED)
COPYABLE = (Status.RUNNING, Status.SUSPENDED)
