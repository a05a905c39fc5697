"""Choosing a driver: `runc`, `qemu`, or `auto` (QEMU where KVM works)."""

from __future__ import annotations

import logging

from jjhub.config import Settings
from jjhub.errors import Invalid
from jjhub.logs import kv
from jjhub.runtime.base import Runtime

log = logging.getLogger(__name__)

DRIVERS = ("auto", "runc", "qemu")


def make_runtime(settings: Settings) -> Runtime:
    choice = settings.runtime
    if choice not in DRIVERS:
        raise Invalid(f"unknown runtime {choice!r}: choose auto, runc or qemu")
    if choice == "auto":
        from jjhub.runtime import accel

        choice = "qemu" if accel.kvm_works(settings.image_dir) else "runc"
        log.info("runtime chosen %s", kv(runtime=choice, reason="auto"))
    if choice == "qemu":
        from jjhub.runtime.qemu import QemuRuntime

        return QemuRuntime(settings.data_dir, settings.image_dir)
    from jjhub.runtime.runc import RuncRuntime

    return RuncRuntime(settings.data_dir, settings.image_dir, settings.network_cidr)
