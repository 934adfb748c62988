"""The world failing on cue, for fault experiments: private services the experiment starts, breaks and
heals itself, never the machine's own.

- :class:`PrivateMosquitto`: a Mosquitto on free ports (one listener for the bridge, one for the units)
  with a config of its own (with or without persistence), killed with SIGKILL and started again on the
  same ports.
- :class:`PrivatePostgres`: a PostgreSQL cluster in a directory of its own (``initdb``), on a free port,
  stopped ``-m immediate`` (a crash: no checkpoint, recovery on start) and started again.
- :class:`HalfOpenBroker`: a TCP server that accepts connections and reads them, and never answers
  (no CONNACK, no PUBACK), as a hung broker does.
- :class:`SmallDisk`: a tmpfs of a few megabytes that fills up (a file takes the free space) and then
  grows (remounted bigger). Needs root; raises :class:`FaultUnavailable` when it cannot mount.

Each ``heal``-like method returns the moment (``time.monotonic()``) the service could be used again: the
first accepted connection, not the moment a start command returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PG_BIN = Path(os.environ.get("TELECARE_PG_BIN", "/usr/lib/postgresql/15/bin"))


class FaultUnavailable(RuntimeError):
    """This machine cannot stage the fault (no binary, no permission to mount)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def accepting(host: str, port: int, timeout: float = 30.0, step: float = 0.01) -> float:
    """Wait until ``host:port`` accepts a TCP connection; the moment it first did."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(step)
                continue
            at = time.monotonic()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return at


class PrivateMosquitto:
    """A Mosquitto of the experiment's own on ``127.0.0.1:port``."""

    def __init__(self, workdir: Path, *, persistence: bool = False, port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise FaultUnavailable("the mosquitto binary is not installed")
        self.binary = binary
        self.port = port or free_port()
        #: A second listener for the units, so a fault can be staged on the bridge's port alone.
        self.unit_port = free_port()
        self.persistence = persistence
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            f"listener {self.unit_port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 1000000",  # the default 1000 drops QoS 1 messages (DESIGN.md)
            "max_inflight_messages 1000",
            f"persistence {'true' if persistence else 'false'}",
        ]
        if persistence:  # saved every second, so a SIGKILL loses at most about a second of sessions
            lines += [f"persistence_location {workdir}/", "autosave_interval 1"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> float:
        """Start it; the moment both listeners accept connections."""
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                self.binary, "-c", str(self.conf), stdout=out, stderr=out
            )
        return max(await accepting("127.0.0.1", self.port), await accepting("127.0.0.1", self.unit_port))

    async def kill(self) -> float:
        """SIGKILL: no goodbye to any client, nothing saved since the last autosave; when it died."""
        proc, self.proc = self.proc, None
        if proc is None:
            return time.monotonic()
        proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        await proc.wait()
        return at

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


class PrivatePostgres:
    """A PostgreSQL cluster of the experiment's own (trust authentication, loopback, a free port).

    As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
    """

    def __init__(self, *, port: int | None = None, bindir: Path = PG_BIN) -> None:
        if not (bindir / "pg_ctl").exists():
            raise FaultUnavailable(f"PostgreSQL binaries not found in {bindir} (TELECARE_PG_BIN)")
        self.bindir = bindir
        self.port = port or free_port()
        # A directory of its own under the system's temporary directory: the server's user must be able
        # to reach it (a test's tmp_path is private to root). Removed by remove().
        self.workdir = Path(tempfile.mkdtemp(prefix="telecare-chaos-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _run(self, *args: str, check: bool = True) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._as,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.workdir,
        )
        out, _ = await proc.communicate()
        if check and proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {out.decode()[-2000:]}")

    async def init(self) -> None:
        """Create the cluster (``initdb``)."""
        if self._as:
            shutil.chown(self.workdir, "postgres", "postgres")
        await self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    async def start(self) -> float:
        """Start the server; the moment it accepts a session (after crash recovery, if it was killed)."""
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        await self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "start"
        )
        return await self.ready()

    async def ready(self, timeout: float = 60.0) -> float:
        """Wait until a session can start; the moment one did."""
        import asyncpg

        async with asyncio.timeout(timeout):
            while True:
                try:
                    conn = await asyncpg.connect(self.dsn(), timeout=2)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await asyncio.sleep(0.01)
                    continue
                at = time.monotonic()
                await conn.close()
                return at

    async def crash(self) -> float:
        """``pg_ctl stop -m immediate``: every session cut, no checkpoint; the moment it began."""
        at = time.monotonic()
        await self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        return at

    async def stop(self) -> None:
        await self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop", check=False)

    async def remove(self) -> None:
        """Stop the server and delete the cluster."""
        if self.data.exists():
            await self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def create_database(self, name: str) -> str:
        """A new database; its URL."""
        import asyncpg

        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)


class HalfOpenBroker:
    """Accepts TCP connections on ``port`` and reads whatever comes, never answering: a client's
    CONNECT waits for a CONNACK that never comes. :meth:`close` ends it as a process dies would: the
    listener and every connection closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = 0
        self.bytes_read = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._readers: set[asyncio.Task[None]] = set()
        #: Notified whenever a connection is accepted, sends bytes or closes (:meth:`until`).
        self._changed = asyncio.Condition()

    async def start(self) -> float:
        self._server = await asyncio.start_server(self._swallow, "127.0.0.1", self.port, reuse_address=True)
        return time.monotonic()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        await self._note_change()
        try:
            while data := await reader.read(65536):
                self.bytes_read += len(data)
                await self._note_change()
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            await self._note_change()

    async def _note_change(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, check: Callable[[HalfOpenBroker], bool]) -> None:
        """Wait until ``check(self)`` holds (checked whenever a connection comes, sends or goes)."""
        async with self._changed:
            await self._changed.wait_for(lambda: check(self))

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed by their client."""
        return len(self._writers)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            await server.wait_closed()


class SmallDisk:
    """A tmpfs of ``size`` bytes at ``path``: :meth:`fill` takes all but ``leave`` bytes of its free
    space with a file, :meth:`grow` remounts it bigger (the file stays)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.mounted = False
        self._filler = path / "filler"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise FaultUnavailable(
                f"cannot mount a tmpfs at {self.path}: {done.stderr.strip() or done.returncode}"
            )
        self.mounted = True

    def free(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave: int = 0) -> int:
        """Take the free space but ``leave`` bytes; how many bytes the filler took."""
        take = max(0, self.free() - leave)
        with self._filler.open("ab") as out:
            if take:
                os.posix_fallocate(out.fileno(), out.tell(), take)
        return take

    def grow(self, size: int) -> None:
        done = subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise FaultUnavailable(f"cannot grow the tmpfs at {self.path}: {done.stderr.strip()}")
        self.size = size

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False
