"""Server-sent event streams of workspace and session status changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from jjhub.api.deps import OwnedSession, OwnedWorkspace, services
from jjhub.workspaces.events import EventHub

router = APIRouter(prefix="/api/repos/{owner}/{repo}", tags=["streams"])

KEEPALIVE_SECONDS = 15.0


def _frame(number: int, event: str, data: dict[str, str]) -> bytes:
    return f"id: {number}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _events(
    request: Request,
    hub: EventHub,
    kind: str,
    subject_id: str,
    first_status: str,
    keepalive: float,
) -> AsyncIterator[bytes]:
    """The current status, then one frame per change, with keep-alive comments.

    The queue is subscribed before the first frame is sent so no change can
    slip between them, and released however the client goes away.
    """
    name = "workspace.status" if kind == "workspace" else "workspace.session"
    key = "workspace_id" if kind == "workspace" else "session_id"
    queue = hub.subscribe(kind, subject_id)
    try:
        number = 1
        yield _frame(number, name, {key: subject_id, "status": first_status})
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=keepalive)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": keep-alive\n\n"
                continue
            number += 1
            data = {key: subject_id, "status": event.status, "cause": event.cause}
            yield _frame(number, name, data)
    finally:
        hub.unsubscribe(kind, subject_id, queue)


def _stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/workspaces/{workspace_id}/stream")
def stream_workspace(workspace: OwnedWorkspace, request: Request) -> StreamingResponse:
    """`workspace.status` events: the current status, then every change."""
    svc = services(request)
    try:
        keepalive = float(request.query_params.get("keepalive", KEEPALIVE_SECONDS))
    except ValueError:
        keepalive = KEEPALIVE_SECONDS
    return _stream(
        _events(
            request,
            svc.workspaces.events,
            "workspace",
            workspace.id,
            workspace.status,
            max(1.0, min(keepalive, 60.0)),
        )
    )


@router.get("/workspace/sessions/{session_id}/stream")
def stream_session(row: OwnedSession, request: Request) -> StreamingResponse:
    """`workspace.session` events: the current status, then every change."""
    svc = services(request)
    return _stream(
        _events(
            request,
            svc.workspaces.events,
            "session",
            row.id,
            row.status,
            KEEPALIVE_SECONDS,
        )
    )
