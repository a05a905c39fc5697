"""The OCI `config.json` and process specs the runc driver hands to runc.

Kept apart from the driver so the security-relevant choices (namespaces,
capabilities, uid mapping, mounts, limits) sit in one readable place. The
defaults follow `runc spec` with two departures taken from Docker: the fuller
capability set that `useradd`, `sudo` and `sshd` need, and a user namespace so
those capabilities never reach the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jjhub.runtime.base import MachineSpec, Size

# Root inside maps to this host uid; the base image is shifted to match.
UID_OFFSET = 100000
UID_COUNT = 65536

# Docker's default set: enough for useradd, sudo and sshd. Inside the user
# namespace they act only on objects the namespace owns.
CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]
READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Where the host-written boot directory appears inside the machine.
BOOT_MOUNT = "/run/jjhub"


@dataclass(frozen=True)
class ExecUser:
    """Who a process inside runs as."""

    uid: int
    gid: int
    home: str
    name: str


ROOT = ExecUser(0, 0, "/root", "root")
DEVELOPER = ExecUser(1000, 1000, "/home/developer", "developer")
KNOWN_USERS = {ROOT.name: ROOT, DEVELOPER.name: DEVELOPER}


@dataclass(frozen=True)
class BundleLayout:
    """The host paths a machine's config refers to."""

    rootfs: Path
    boot_dir: Path
    cgroup_path: str
    extra_env: dict[str, str] = field(default_factory=dict)


def process_spec(
    argv: list[str], user: ExecUser, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """An OCI process; non-root users get no capabilities, as after a login.

    `runc exec --user` would keep the init's capabilities for any uid, so
    exec goes through a full process spec where that can be said.
    """
    caps = CAPABILITIES if user.uid == 0 else []
    environment = {
        "PATH": BASE_PATH,
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        **(env or {}),
    }
    return {
        "terminal": False,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": argv,
        "env": [f"{key}={value}" for key, value in environment.items()],
        "cwd": user.home,
        "capabilities": {
            "bounding": CAPABILITIES,
            "effective": caps,
            "permitted": caps,
        },
        "noNewPrivileges": False,
    }


def oci_config(spec: MachineSpec, layout: BundleLayout) -> dict[str, Any]:
    """The whole config.json for one machine's container."""
    init = ["/usr/bin/tini", "-s", "--", "/bin/sh", f"{BOOT_MOUNT}/init.sh"]
    return {
        "ociVersion": "1.0.2-dev",
        "process": process_spec(init, ROOT, {**spec.env, **layout.extra_env}),
        "root": {"path": str(layout.rootfs), "readonly": False},
        "hostname": spec.machine_id,
        "mounts": _mounts(layout.boot_dir),
        "linux": {
            "uidMappings": [_mapping()],
            "gidMappings": [_mapping()],
            "namespaces": [
                {"type": kind}
                for kind in ("pid", "network", "ipc", "uts", "mount", "user")
            ],
            "cgroupsPath": layout.cgroup_path,
            "resources": _resources(spec.size),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }


def _mapping() -> dict[str, int]:
    return {"containerID": 0, "hostID": UID_OFFSET, "size": UID_COUNT}


def _resources(size: Size) -> dict[str, Any]:
    memory = size.memory_mib * 1024 * 1024
    period = 100_000
    return {
        "devices": [{"allow": False, "access": "rwm"}],
        # limit == swap: memory+swap capped at the limit, so no swap use.
        "memory": {"limit": memory, "swap": memory},
        "cpu": {"quota": int(size.cpus * period), "period": period},
        "pids": {"limit": size.pids},
    }


def _mounts(boot_dir: Path) -> list[dict[str, Any]]:
    """runc's defaults, a tmpfs /run for sshd, and the host-written files.

    resolv.conf, hosts and hostname are bind-mounted (as Docker does) so they
    never land in the overlay's upper dir and forks get their own.
    """
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        _tmpfs("/dev", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": [
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        },
        _tmpfs("/dev/shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        _tmpfs("/run", ["nosuid", "nodev", "mode=755", "size=65536k"]),
        _bind(boot_dir, BOOT_MOUNT),
    ]
    for name in ("resolv.conf", "hosts", "hostname"):
        mounts.append(_bind(boot_dir / name, f"/etc/{name}"))
    return mounts


def _tmpfs(destination: str, options: list[str]) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": options,
    }


def _bind(source: Path, destination: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro", "nosuid", "nodev"],
    }


# Runs under tini on every boot. Host keys belong to one machine: a fork or a
# restore from a snapshot carries its source's marker, so it makes new keys.
INIT_SCRIPT = """\
# jjhub machine init (written by jjhub/runtime/runc_config.py on each boot)
set -eu
boot={boot}
me=$(cat /proc/sys/kernel/hostname)
marker=/etc/ssh/jjhub-host-keys-for
if [ "$(cat $marker 2>/dev/null || true)" != "$me" ]; then
  rm -f /etc/ssh/ssh_host_*
fi
# ed25519 and ECDSA only: an RSA-3072 key alone took most of a create.
for type in ed25519 ecdsa; do
  key=/etc/ssh/ssh_host_${{type}}_key
  [ -f $key ] || ssh-keygen -q -t $type -N '' -f $key
  echo "HostKey $key"
done > /etc/ssh/sshd_config.d/10-jjhub-host-keys.conf
echo "$me" > $marker
install -d -m 755 -o root -g root /etc/ssh/authorized_keys /run/sshd
install -m 644 -o root -g root $boot/authorized_keys /etc/ssh/authorized_keys/root
install -m 644 -o root -g root $boot/authorized_keys \\
  /etc/ssh/authorized_keys/{user}
install -d -m 700 -o root -g root /root/.ssh
install -m 600 -o root -g root $boot/authorized_keys /root/.ssh/authorized_keys
/usr/sbin/sshd -t
touch /run/jjhub-ready
echo "jjhub: machine $me ready"
exec sleep infinity
"""

# Marker the init touches on the machine's /run (a tmpfs) once sshd is good.
READY_MARKER = "run/jjhub-ready"


def boot_files(spec: MachineSpec, address: str, nameserver: str) -> dict[str, str]:
    """The files of the boot directory, bind-mounted read-only inside."""
    name = spec.machine_id
    return {
        "init.sh": INIT_SCRIPT.format(boot=BOOT_MOUNT, user=spec.linux_user),
        "authorized_keys": spec.gateway_public_key.strip() + "\n",
        "resolv.conf": f"nameserver {nameserver}\n",
        "hostname": f"{name}\n",
        "hosts": (
            "127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{name}\n"
            f"{address}\t{name}\n"
            # sshd -i names its peer "UNKNOWN" and PAM's audit resolves it;
            # answered here, logins never wait on DNS (5 s under concurrency).
            "127.0.0.1\tUNKNOWN\n"
        ),
    }
