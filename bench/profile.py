"""Optional: sample the gateway with py-spy during the closed-loop window (``--profile``).

py-spy is not a dependency: ``.venv/bin/pip install py-spy`` to use this. Sampling pauses the
process it samples, so numbers of a profiled run are not comparable with an unprofiled one.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, output: Path, rate: int = 100) -> asyncio.subprocess.Process:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate),
        "--format", "raw", "--output", str(output),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


def _frame(frame: str) -> str:
    # "append_event (gateway/store/sqlite.py:300)" -> "append_event (gateway/store/sqlite.py)"
    frame = _LINE.sub(")", frame)
    return frame.replace(str(Path(sys.prefix)), "<venv>")


def summarize(collapsed: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by own samples and by samples with them on the stack, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "samples": n, "share": round(n / total, 3)} for f, n in counter.most_common(top)]

    return {"file": str(collapsed), "samples": total, "own": table(own), "inclusive": table(inclusive)}
