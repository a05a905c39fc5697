"""A minimal server-sent events reader over a raw HTTP/1.1 connection."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass


@dataclass
class SseEvent:
    id: str
    event: str
    data: dict


class SseStream:
    """Reads frames from `GET path`; `close()` drops the TCP connection."""

    def __init__(self, port: int, path: str, token: str, timeout: float = 60) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: token {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        while self.file.readline() not in (b"\r\n", b""):
            pass

    def next_event(self) -> SseEvent:
        """The next event frame, skipping keep-alive comments and chunk sizes."""
        fields: dict[str, str] = {}
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("stream closed")
            text = line.decode().rstrip("\r\n")
            if text.startswith(("id:", "event:", "data:")):
                name, _, value = text.partition(":")
                fields[name] = value.strip()
            elif text == "" and "data" in fields:
                return SseEvent(
                    fields.get("id", ""),
                    fields.get("event", ""),
                    json.loads(fields["data"]),
                )

    def next_matching(self, status: str, limit: int = 20) -> SseEvent:
        for _ in range(limit):
            event = self.next_event()
            if event.data.get("status") == status:
                return event
        raise AssertionError(f"no {status!r} event in {limit} events")

    def close(self) -> None:
        self.file.close()
        self.sock.close()
