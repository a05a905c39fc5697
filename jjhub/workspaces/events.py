"""Status changes as events: stored, logged and pushed to stream listeners.

Logs and SSE streams come from this one place, so what a client sees in
`/stream` is exactly what the log says happened, with the same cause.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

from jjhub.logs import kv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    kind: str  # "workspace" or "session"
    subject_id: str
    status: str
    cause: str


class EventHub:
    """Fan-out of events to listeners; a slow listener never blocks others."""

    QUEUE_LIMIT = 256

    def __init__(self) -> None:
        self._listeners: dict[tuple[str, str], set[asyncio.Queue[Event]]] = defaultdict(
            set
        )

    def publish(self, event: Event) -> None:
        log.info(
            "%s status %s",
            event.kind,
            kv(id=event.subject_id, status=event.status, cause=event.cause),
        )
        for queue in list(self._listeners.get((event.kind, event.subject_id), ())):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self, kind: str, subject_id: str) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self.QUEUE_LIMIT)
        self._listeners[(kind, subject_id)].add(queue)
        return queue

    def unsubscribe(
        self, kind: str, subject_id: str, queue: asyncio.Queue[Event]
    ) -> None:
        listeners = self._listeners.get((kind, subject_id))
        if listeners is None:
            return
        listeners.discard(queue)
        if not listeners:
            del self._listeners[(kind, subject_id)]

    def listener_count(self) -> int:
        return sum(len(v) for v in self._listeners.values())
