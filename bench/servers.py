"""The servers under test, as subprocesses: the real gateway (``python -m gateway.cli serve``) with a
generated config, and the bare relay (``python -m bench.relay``). Plus what is read from outside
them: CPU time and RSS from /proc, and throwaway PostgreSQL databases."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from .relay import raise_nofile_limit

REPO = Path(__file__).resolve().parent.parent
MEMORY_URL = "memory://"  # not a gateway store: bench/nostore.py swaps in dicts
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# /proc readings ------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    return cpu_seconds_of(f"/proc/{pid}/stat")  # fields 14 and 15 of proc(5)


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU of the main thread alone (the event loop); the rest of cpu_seconds is other threads
    (aiosqlite runs every SQLite call in a thread of its own)."""
    return cpu_seconds_of(f"/proc/{pid}/task/{pid}/stat")


def cpu_seconds_of(stat_path: str) -> float:
    with open(stat_path, "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (user, nice, system) plus steal (other
    virtual machines). Interrupt time is left out: loopback traffic of the run itself lands there."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + steal) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# the processes -------------------------------------------------------------------------------
@dataclass
class ServerProcess:
    """One server under test. ``kind`` is "gateway" or "relay"."""

    kind: str
    argv: list[str]
    port: int
    workdir: Path
    cwd: Path = REPO
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.kind}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        # The child inherits our open-files limit: lift it here (the gateway cannot be asked to).
        raise_nofile_limit()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=str(self.cwd), env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode} before it was ready:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} not ready after {timeout}s:\n{self.log_tail()}")

    def ready(self) -> bool:
        """Whether it serves yet: ``GET /healthz`` answers 200."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def relay_process(loop: str, workdir: Path) -> ServerProcess:
    port = free_port()
    return ServerProcess("relay", [sys.executable, "-m", "bench.relay", "--port", str(port), "--loop", loop],
                         port, workdir)


def gateway_config(store_url: str, loop: str, agents: int, port: int) -> dict[str, Any]:
    """A bench config: web chat, one queue, ``agents`` agents with one seat each, quiet logs."""
    return {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning", "log_format": "json",
                   "event_loop": loop, "shutdown_timeout": 5},
        "store": {"url": store_url},
        "channels": [{"type": "webchat", "path": "/webchat/ws"}],
        # No FAQ: every message a customer sends before the handoff is answered "no answer"; the
        # bench says "agent" first, so self-service only costs the handoff check.
        "selfservice": {"max_unanswered": 2},
        "queues": [{"name": "general"}],
        "routing": {"default_queue": "general"},
        "agents": [{"id": agent_id(i), "name": f"Agent {i}", "token": agent_token(i), "capacity": 1,
                    "queues": ["general"]} for i in range(max(agents, 1))],
        # Every bench client is one address sending as fast as it can: the limits would measure
        # themselves. Out of the way, they cost one bucket check per frame, which stays measured.
        "limits": {name: {"rate": UNLIMITED, "burst": UNLIMITED} for name in (
            "messages_per_connection", "messages_per_customer", "agent_messages_per_connection",
            "new_conversations_per_address")},
    }


UNLIMITED = 1_000_000_000


def agent_id(i: int) -> str:
    return f"agent{i:05d}"


def agent_token(i: int) -> str:
    return f"bench-agent-token-{i:05d}"


def gateway_process(store_url: str, loop: str, agents: int, workdir: Path, source: Path = REPO) -> ServerProcess:
    """The gateway as ``source`` has it (``python -m`` puts the working directory first on sys.path)."""
    port = free_port()
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(store_url, loop, agents, port), sort_keys=False))
    module, env = "gateway.cli", {}
    if store_url == MEMORY_URL:
        # The storeless probe (bench/nostore.py): bench from this repo, the gateway from ``source``.
        module, env = "bench.nostore", {"PYTHONPATH": os.pathsep.join([str(source), str(REPO)])}
    return ServerProcess("gateway", [sys.executable, "-m", module, "serve", "--config", str(config_path),
                                     "--port", str(port)], port, workdir, cwd=source, env=env)


def export_revision(rev: str, into: Path) -> dict[str, Any]:
    """``git archive`` of one revision of this repo into ``into`` (the working tree is not touched):
    benchmark a commit while uncommitted work is in progress."""
    commit = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=REPO, capture_output=True,
                            text=True, check=True, timeout=10).stdout.strip()
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True,
                             timeout=60).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(into, filter="data")
        except TypeError:  # Python before 3.11.4: no extraction filters (our own repo's archive)
            tar.extractall(into)
    return {"dir": str(into), "commit": commit, "revision": rev, "local_changes": []}


def source_info(source: Path) -> dict[str, Any]:
    """Which gateway code ran: the git commit and whether the server's packages had local changes."""
    info: dict[str, Any] = {"dir": str(source)}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                        check=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "gateway", "adapters", "routing"], cwd=source,
                                 capture_output=True, text=True, check=True, timeout=10).stdout.splitlines()
        info["local_changes"] = [line[3:] for line in changed]
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


# throwaway databases ---------------------------------------------------------------------------
def pg_admin_dsn() -> str:
    return os.environ.get("CONTACTGATE_BENCH_PG_DSN") or DEFAULT_PG_DSN


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


class ThrowawayPostgres:
    """A fresh database on the admin DSN's server, dropped on exit; ``pids()`` lists the server
    backends connected to it, so their CPU can be charged to the run as well."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"contactgate_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.url = _with_database(admin_dsn, self.name)
        self._admin: Any = None

    async def __aenter__(self) -> "ThrowawayPostgres":
        import asyncpg

        self._admin = await asyncpg.connect(self.admin_dsn, timeout=10)
        await self._admin.execute(f'CREATE DATABASE "{self.name}"')
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._admin is None:
            return
        try:
            await self._admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await self._admin.close()

    async def pids(self) -> list[int]:
        rows = await self._admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", self.name)
        return [r["pid"] for r in rows]


async def pg_available(dsn: str) -> str | None:
    """None when the server answers, else why not."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available", reported as is
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


def capacity_dir() -> Path:
    """Where the capacity run keeps its SQLite file: tmpfs when there is one (see docs/performance.md)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def remove_sqlite(db: Path) -> None:
    """A SQLite database file and its companions (WAL, shared memory, journal)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            Path(str(db) + suffix).unlink()


def sum_cpu(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[pid] = cpu_seconds(pid)
    return out


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
