"""What every figure of the bench shares: the client processes, the CPU readings around a
measured window, and nearest-rank percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from .client import worker_main
from .servers import ServerProcess, ThrowawayPostgres, cpu_seconds, machine_busy_seconds, main_thread_cpu_seconds, sum_cpu


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# client processes ------------------------------------------------------------------------------
class WorkerPool:
    """``size`` client processes (spawned, so nothing of ours is shared with them)."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for index in range(size):
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(child, index), name=f"bench-client-{index}", daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="bench-pipe")

    @property
    def size(self) -> int:
        return len(self.pipes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def _call(self, index: int, command: str, args: dict[str, Any]) -> Any:
        pipe = self.pipes[index]
        pipe.send((command, args))
        status, result = await asyncio.get_running_loop().run_in_executor(self._executor, pipe.recv)
        if status != "ok":
            raise RuntimeError(f"client process {index} failed in {command!r}:\n{result}")
        return result

    def start_all(self, command: str, args: list[dict[str, Any]] | dict[str, Any]) -> "asyncio.Future[list[Any]]":
        per_worker = args if isinstance(args, list) else [args] * self.size
        return asyncio.ensure_future(asyncio.gather(*(self._call(i, command, a) for i, a in enumerate(per_worker))))

    async def all(self, command: str, args: list[dict[str, Any]] | dict[str, Any] | None = None) -> list[Any]:
        return await self.start_all(command, {} if args is None else args)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send(("quit", {}))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self._executor.shutdown(wait=False)


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


# statistics ------------------------------------------------------------------------------------
def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


class Sampler:
    """CPU seconds of the server, the client processes and (PostgreSQL) the database backends."""

    def __init__(self, server: ServerProcess, pool: WorkerPool, pg: ThrowawayPostgres | None) -> None:
        self.server, self.pool, self.pg = server, pool, pg

    async def sample(self) -> dict[str, Any]:
        db = sum_cpu(await self.pg.pids()) if self.pg is not None else {}
        return {"at": time.monotonic(), "server": cpu_seconds(self.server.pid),
                "server_main": main_thread_cpu_seconds(self.server.pid), "machine": machine_busy_seconds(),
                "clients": sum(sum_cpu(self.pool.pids).values()), "db": db}

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        db = sum(cpu - before["db"].get(pid, 0.0) for pid, cpu in after["db"].items())
        return {"seconds": after["at"] - before["at"], "server": after["server"] - before["server"],
                "server_main": after["server_main"] - before["server_main"],
                "machine": after["machine"] - before["machine"],
                "clients": after["clients"] - before["clients"], "db": db}
