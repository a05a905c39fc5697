"""One log format for the whole process: time, level, logger, message, key=value."""

from __future__ import annotations

import logging
import sys


def kv(**fields: object) -> str:
    """Render context as `key=value` pairs, quoting values with spaces."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or " " in text or '"' in text:
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
