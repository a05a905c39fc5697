"""Errors a runtime driver raises; the domain maps them to its own."""


class RuntimeFailure(Exception):
    """A machine operation failed; the message says what and how to fix it."""


class MachineNotFound(RuntimeFailure):
    """The runtime has no machine with this id."""


class SnapshotNotFound(RuntimeFailure):
    """The runtime has no snapshot with this id."""


class IncompatibleSnapshot(RuntimeFailure):
    """A snapshot was made by a different driver or hypervisor version."""
