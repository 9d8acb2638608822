"""Hot reload of config.yaml: on a change of it or of a file it names (the FAQ knowledge bases
and their calibration files), SIGHUP or ``POST /api/config/reload``.

The new file is validated completely (config and FAQ) before anything is swapped; a broken file
is refused with its reasons and the running config stays. Only routing-related sections apply
live; ``server``, ``store`` and ``channels`` changes are reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, file_warnings
from .pipeline import Pipeline
from .selfservice import load_gateway_config

log = logging.getLogger("contactgate.reload")


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    message: str
    problems: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "message": self.message, "problems": self.problems,
                "restart_needed": self.restart_needed}


class ConfigReloader:
    def __init__(self, path: Path | None, pipeline: Pipeline, server_overrides: dict[str, Any] | None = None) -> None:
        self.path = path
        self.pipeline = pipeline
        self.server_overrides = server_overrides or {}  # --host/--port given to serve
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._seen = self._signature()

    def _watched(self) -> list[Path]:
        """The files the running config names that a reload reads again: each KB and its
        calibration file (an admin edits the FAQ without touching config.yaml)."""
        ss = self.pipeline.config.selfservice
        named = [ss.faq, ss.calibration, *(p for kb in ss.knowledge_bases for p in (kb.faq, kb.calibration))]
        return sorted({p for p in named if p is not None})

    def _signature(self) -> tuple[Any, ...] | None:
        """The config file's modification time and size, then those of the files it names (None
        for one that is missing: its return is a change too). None without the config file."""
        if self.path is None:
            return None
        stats = []
        for path in (self.path, *self._watched()):
            try:
                stat = os.stat(path)
                stats.append((stat.st_mtime_ns, stat.st_size))
            except OSError:
                if path == self.path:
                    return None
                stats.append(None)
        return tuple(stats)

    async def reload(self, reason: str) -> ReloadOutcome:
        if self.path is None:
            return ReloadOutcome(False, "this gateway was not started from a config file")
        async with self._lock:
            watched = self._watched()
            self._seen = self._signature()
            try:
                # In a thread: the FAQ is indexed (and, for the semantic matcher, what changed
                # is embedded) without stopping the loop.
                config, selfservice = await asyncio.to_thread(load_gateway_config, self.path)
                if self.server_overrides:
                    config = config.model_copy(update={"server": config.server.model_copy(update=self.server_overrides)})
            except ConfigError as exc:
                log.warning("config reload refused; the running config stays", extra={"reason": reason, "problems": exc.problems})
                # The first problem in the message: it may be in a file the config names (a KB,
                # a calibration file), which it names with its line.
                problems = [f"{exc.source}:{p}" for p in exc.problems]
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                return ReloadOutcome(False, f"not reloaded, the running config stays: {problems[0]}{more}", problems)
            for warning in file_warnings(self.path, config):
                log.warning("config warning", extra={"warning": f"{self.path}:{warning}"})
            selfservice.log_notice()
            restart = await self.pipeline.reconfigure(config, selfservice)
            if self._watched() != watched:  # the new config names other files: watch those
                self._seen = self._signature()
            if restart:
                log.warning("config reloaded; some changes need a restart", extra={"sections": restart})
            log.info("config reloaded", extra={"reason": reason})
            message = "reloaded" + (f"; restart to apply changes to {', '.join(restart)}" if restart else "")
            return ReloadOutcome(True, message, restart_needed=restart)

    async def start(self, poll_interval: float) -> None:
        if self.path is not None and poll_interval > 0:
            self._task = asyncio.create_task(self._watch(poll_interval), name="config-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self, interval: float) -> None:
        # Polling the files' mtime and size: no extra dependency, works on every filesystem
        # (including the bind mounts and ConfigMaps where inotify is unreliable).
        while True:
            await asyncio.sleep(interval)
            signature = self._signature()
            if signature is not None and signature != self._seen:
                changed = "file changed" if signature[0] != (self._seen or (None,))[0] else "FAQ file changed"
                await self.reload(reason=changed)
