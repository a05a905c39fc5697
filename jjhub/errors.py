"""Domain errors shared by the API, the SSH gateway and the CLI.

The domain never chooses an HTTP status: `api/errors.py` maps these classes
to statuses in one table, and the gateway turns them into one-line refusals.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class; `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    pass


class Unauthenticated(DomainError):
    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message)


class Forbidden(DomainError):
    pass


class Conflict(DomainError):
    pass


class BadRequest(DomainError):
    """A request the server cannot read (bad paging values, missing fields)."""


class Invalid(DomainError):
    """Input that parses but makes no sense; `field` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ValidationFailed(DomainError):
    """422 `validation failed` with per-field errors, as the forge API answers."""

    def __init__(self, resource: str, fields: list[tuple[str, str]]) -> None:
        super().__init__("validation failed")
        self.errors = [
            {"resource": resource, "field": field, "code": code}
            for field, code in fields
        ]


class Unavailable(DomainError):
    """The machine layer failed; the message says what to do next."""
