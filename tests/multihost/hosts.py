"""Separate hosts on one machine: Linux network namespaces joined to this one by veth pairs,
each with its own address, hostname and empty local folders; and a TCP forwarder that makes
a service listening on this machine's 127.0.0.1 (PostgreSQL in CI) reachable from them.

Everything here talks only to addresses on this machine and its namespaces."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class CannotMakeHosts(RuntimeError):
    """Namespaces cannot be made here (not root, no `ip`, no permission in this container)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise CannotMakeHosts(f"ip {' '.join(args)}: {done.stderr.strip()}")


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no route on this machine uses yet."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(word, strict=False) for word in routes.split() if word[:1].isdigit() and "." in word]
    start = os.getpid() % 256
    for offset in range(256):
        candidate = ipaddress.ip_network(f"10.213.{(start + offset) % 256}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise CannotMakeHosts("no free 10.213.x.0/24 subnet for the test hosts")


@dataclass
class Host:
    name: str  # its hostname, also in the lease owners of its senders
    namespace: str
    veth: str  # the veth end on this machine's side
    address: str  # the host's own address
    gateway: str  # this machine's address on the link to it
    home: Path  # its own empty folders: instance/, storage/
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, args: list[str], env: dict[str, str], cwd: Path, label: str) -> subprocess.Popen:
        """Run `args` on this host: in its network namespace and a UTS namespace of its own, so
        that its hostname (and the lease owners its senders write) is the host's."""
        log = (self.home / f"{label}.log").open("wb")
        self.logs.append(log)
        wrapped = ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--", "sh", "-c"]
        wrapped += [f'hostname {self.name} && exec "$@"', "sh", *args]
        process = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def cut_off(self) -> None:
        """Take the host's link down, as if its network cable were pulled."""
        _ip("link", "set", self.veth, "down")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        # What they leave behind ends with the host: a worker killed while its work horse (a
        # fork, reparented to init) waited on the cut-off network would outlive the test.
        pids = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True).stdout
        for pid in pids.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        for log in self.logs:
            log.close()

    def log_tail(self, characters: int = 3000) -> str:
        parts = []
        for path in sorted(self.home.glob("*.log")):
            parts.append(f"--- {self.name} {path.name} ---\n{path.read_text(errors='replace')[-characters:]}")
        return "\n".join(parts)


class Network:
    """Hosts made as namespaces, removed (with their links) on close."""

    def __init__(self, root: Path) -> None:
        if os.geteuid() != 0:
            raise CannotMakeHosts("network namespaces need root (the CI runs this test as root)")
        for tool in ("ip", "unshare"):
            if shutil.which(tool) is None:
                raise CannotMakeHosts(f"`{tool}` is not installed (Debian packages iproute2, util-linux)")
        self.root = root
        self.tag = f"mh{os.getpid() % 100000}"
        self.subnet = free_subnet()
        self.hosts: list[Host] = []

    def add(self, short: str) -> Host:
        block = list(self.subnet.subnets(new_prefix=30))[len(self.hosts)]
        gateway, address = (str(a) for a in list(block.hosts())[:2])
        namespace, veth, inside = f"{self.tag}{short}", f"{self.tag}{short}h", f"{self.tag}{short}n"
        _ip("netns", "add", namespace)
        home = self.root / short
        host = Host(f"{self.tag}-{short}", namespace, veth, address, gateway, home)
        self.hosts.append(host)
        # `ip netns exec` puts the files of /etc/netns/<namespace>/ over /etc: the host knows
        # its own name, and asks no name server it cannot reach (each lookup would wait for a
        # timeout: the SMTP client looks its name up to greet the relay).
        etc = Path("/etc/netns") / namespace
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{address} {host.name}\n")
        (etc / "resolv.conf").write_text("# no name server on the test hosts\n")
        (home / "instance").mkdir(parents=True)
        (home / "storage").mkdir()
        _ip("link", "add", veth, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("addr", "add", f"{gateway}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/30", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        # Every address of this machine is reached through the link to it.
        _ip("-n", namespace, "route", "add", "default", "via", gateway)
        return host

    def close(self) -> None:
        for host in self.hosts:
            host.stop()
        for host in self.hosts:
            with contextlib.suppress(CannotMakeHosts):
                _ip("netns", "del", host.namespace)  # takes its end of the veth, and so the pair
            with contextlib.suppress(CannotMakeHosts):
                _ip("link", "del", host.veth)
            shutil.rmtree(Path("/etc/netns") / host.namespace, ignore_errors=True)


class Forwarder(threading.Thread):
    """Accepts TCP connections on (address, port) and relays each to (target, target_port)."""

    def __init__(self, address: str, target: str, target_port: int) -> None:
        super().__init__(daemon=True)
        self.address, self.target, self.target_port = address, target, target_port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.failure: BaseException | None = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.target, self.target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._relay(reader, upstream_writer), self._relay(upstream_reader, writer))
        except asyncio.CancelledError:  # the forwarder stops: its connections end quietly
            writer.close()
            upstream_writer.close()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            server = self.loop.run_until_complete(asyncio.start_server(self._serve, self.address, 0))
        except OSError as exc:
            self.failure = exc
            self.ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    def start_serving(self) -> int:
        self.start()
        self.ready.wait(timeout=10)
        if self.failure or not self.port:
            raise RuntimeError(f"cannot listen on {self.address}: {self.failure}")
        return self.port

    def stop(self) -> None:
        if self.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.join(timeout=10)


def free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]
