"""Host networking for runc machines: a bridge, NAT, and one veth per machine.

Each machine has its own network namespace (made by runc with the container,
so it dies with it). The driver plugs a veth pair into it: one end `eth0`
inside, the other on a host bridge that holds the gateway address. nftables
masquerades the machines' traffic out of the host. Names of the bridge and the
nftables table derive from the CIDR, so two servers with different CIDRs on
one host keep out of each other's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from jjhub.logs import kv
from jjhub.runtime.errors import RuntimeFailure

log = logging.getLogger(__name__)

FALLBACK_NAMESERVER = "1.1.1.1"


async def run(*argv: str, stdin: bytes | None = None) -> tuple[int, str]:
    """Run a host command; returns its exit code and combined output."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace").strip()


async def check(*argv: str, stdin: bytes | None = None, what: str) -> str:
    code, out = await run(*argv, stdin=stdin)
    if code != 0:
        raise RuntimeFailure(f"{what} failed: `{' '.join(argv)}` said: {out}")
    return out


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class HostNetwork:
    """The bridge, NAT rules and address leases for one CIDR."""

    def __init__(self, cidr: str, state_dir: Path) -> None:
        self.network = ipaddress.IPv4Network(cidr)
        if self.network.num_addresses < 8:
            raise RuntimeFailure(f"network {cidr} is too small; use a /29 or larger")
        tag = _short_hash(str(self.network), 8)
        self.bridge = f"jjbr{tag}"
        self.table = f"jjhub_{tag}"
        self.gateway = self.network.network_address + 1
        self._leases = Leases(state_dir / "leases.json", self.network)
        self._ready = False

    def veth_name(self, machine_id: str) -> str:
        """Host end of a machine's veth; at most 15 characters, as Linux wants."""
        return f"jjv{_short_hash(f'{self.network}/{machine_id}', 11)}"

    async def ensure(self) -> None:
        """Create the bridge, NAT table and forwarding; safe to repeat."""
        if self._ready and Path(f"/sys/class/net/{self.bridge}").exists():
            return
        await self._ensure_bridge()
        await check("nft", "-f", "-", stdin=self._ruleset().encode(), what="nft")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        self._ready = True
        log.info(
            "host network ready %s",
            kv(bridge=self.bridge, cidr=self.network, gateway=self.gateway),
        )

    async def _ensure_bridge(self) -> None:
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            code, out = await run("ip", "link", "add", self.bridge, "type", "bridge")
            if code != 0 and "exists" not in out:
                raise RuntimeFailure(f"creating bridge {self.bridge} failed: {out}")
        address = f"{self.gateway}/{self.network.prefixlen}"
        code, out = await run("ip", "addr", "replace", address, "dev", self.bridge)
        if code != 0:
            raise RuntimeFailure(f"addressing bridge {self.bridge} failed: {out}")
        await check("ip", "link", "set", self.bridge, "up", what="bridge up")

    def _ruleset(self) -> str:
        """Replace the table atomically: masquerade out, allow forwarding."""
        net, br, table = self.network, self.bridge, self.table
        return (
            f"table ip {table}\n"
            f"delete table ip {table}\n"
            f"table ip {table} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {net} ip daddr != {net} masquerade\n"
            "  }\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            f'    iifname "{br}" accept\n'
            f'    oifname "{br}" ct state established,related accept\n'
            "  }\n"
            "}\n"
        )

    async def remove(self) -> bool:
        """Remove the bridge and NAT table if no machine is plugged in.

        For servers and tests that are gone for good; returns whether the
        host plumbing was removed (False while any machine still uses it).
        """
        ports = Path(f"/sys/class/net/{self.bridge}/brif")
        if ports.exists() and any(ports.iterdir()):
            return False
        await run("ip", "link", "del", self.bridge)
        await run("nft", "delete", "table", "ip", self.table)
        self._ready = False
        log.info("host network removed %s", kv(bridge=self.bridge, cidr=self.network))
        return True

    async def lease(self, machine_id: str) -> ipaddress.IPv4Address:
        return await self._leases.acquire(machine_id)

    async def release(self, machine_id: str) -> None:
        await self._leases.release(machine_id)

    async def attach(
        self, machine_id: str, pid: int, address: ipaddress.IPv4Address
    ) -> None:
        """Plug a running container's network namespace into the bridge."""
        await self.ensure()
        veth = self.veth_name(machine_id)
        await self.detach(machine_id)
        await check(
            "ip", "link", "add", veth, "type", "veth",
            "peer", "name", "eth0", "netns", str(pid),
            what="creating veth",
        )  # fmt: skip
        try:
            # Isolated ports reach the host but not each other: machines of
            # different users share the bridge.
            await check(
                "ip", "link", "set", veth, "master", self.bridge, "up",
                what="joining bridge",
            )  # fmt: skip
            await check(
                "ip", "link", "set", veth, "type", "bridge_slave", "isolated", "on",
                what="isolating bridge port",
            )  # fmt: skip
            inside = (
                "link set lo up\n"
                f"addr add {address}/{self.network.prefixlen} dev eth0\n"
                "link set eth0 up\n"
                f"route add default via {self.gateway}\n"
            )
            await check(
                "nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-batch", "-",
                stdin=inside.encode(),
                what="configuring eth0",
            )  # fmt: skip
        except BaseException:
            await self.detach(machine_id)
            raise

    async def detach(self, machine_id: str) -> None:
        """Remove the host end of the veth (the peer goes with it)."""
        veth = self.veth_name(machine_id)
        if Path(f"/sys/class/net/{veth}").exists():
            await run("ip", "link", "del", veth)


class Leases:
    """Machine addresses, in a JSON file locked against other processes too."""

    def __init__(self, path: Path, network: ipaddress.IPv4Network) -> None:
        self.path = path
        self.network = network
        self._lock = asyncio.Lock()

    async def acquire(self, machine_id: str) -> ipaddress.IPv4Address:
        async with self._lock:
            return await asyncio.to_thread(self._acquire, machine_id)

    async def release(self, machine_id: str) -> None:
        async with self._lock:
            await asyncio.to_thread(self._release, machine_id)

    def _acquire(self, machine_id: str) -> ipaddress.IPv4Address:
        with self._locked() as leases:
            for address, owner in leases.items():
                if owner == machine_id:
                    return ipaddress.IPv4Address(address)
            gateway = self.network.network_address + 1
            for host in self.network.hosts():
                if host != gateway and str(host) not in leases:
                    leases[str(host)] = machine_id
                    return host
        raise RuntimeFailure(
            f"no free address left in {self.network}; delete machines or "
            "configure a larger network_cidr"
        )

    def _release(self, machine_id: str) -> None:
        with self._locked() as leases:
            for address in [a for a, owner in leases.items() if owner == machine_id]:
                del leases[address]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, str]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            leases: dict[str, str] = {}
            if self.path.exists():
                leases = json.loads(self.path.read_text() or "{}")
            yield leases
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(leases, indent=1, sort_keys=True))
            tmp.replace(self.path)


def host_nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str:
    """The host's first nameserver, unless it is loopback (unreachable inside)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return FALLBACK_NAMESERVER
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback:
                return str(address)
    return FALLBACK_NAMESERVER
