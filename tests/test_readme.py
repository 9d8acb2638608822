"""README's "Try it" runs as written: its customer and agent scripts, unchanged but for the
port, against the gateway on the shipped config.yaml (its store in a temporary directory), each
end by themselves after a whole exchange; and the make targets and commands the README names
exist and work."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, GatewayProcess

README = (REPO / "README.md").read_text(encoding="utf-8")
RUN = 60.0  # bound on a snippet's run (it ends by itself in well under a second)


def try_it_blocks() -> list[str]:
    section = README[README.index("## Try it"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


async def run_script(path: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(path), cwd=str(path.parent),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        return -1, out.decode(), err.decode() + "\n(did not end by itself)"
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_customer_and_agent_scripts_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = try_it_blocks()
    customer = next(b for b in blocks if "/webchat/ws" in b)
    agent = next(b for b in blocks if "/agent/ws" in b)
    assert len(blocks) == 2
    # The shipped file as make run serves it; only where its store lives and its port differ,
    # through the ${VAR:-default}s it reads.
    monkeypatch.setenv("CONTACTGATE_PORT", "0")
    monkeypatch.setenv("CONTACTGATE_STORE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    for name in ("CONTACTGATE_HOST", "CONTACTGATE_AGENT_ALICE_TOKEN", "CONTACTGATE_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    gateway = await GatewayProcess(REPO / "config.yaml").start()
    try:
        await leave_a_conversation_with_alice(gateway)  # the agent script must leave it alone
        scripts = []
        for name, code in (("customer.py", customer), ("agent.py", agent)):
            assert code.count("127.0.0.1:8080") == 1, code
            path = tmp_path / name
            path.write_text(code.replace("127.0.0.1:8080", f"127.0.0.1:{gateway.port}"), encoding="utf-8")
            scripts.append(path)
        (c_rc, c_out, c_err), (a_rc, a_out, a_err) = await asyncio.gather(*(run_script(p) for p in scripts))
    finally:
        await gateway.stop()
    assert c_rc == 0, f"customer:\n{c_out}\n{c_err}\ngateway:\n{gateway.log_text()}"
    assert a_rc == 0, f"agent:\n{a_out}\n{a_err}\ngateway:\n{gateway.log_text()}"
    # The customer saw the bot answer, the queue, the assignment, Alice's reply and the close.
    for seen in ("'type': 'welcome'", "'author': 'bot'", "'type': 'queued'", "'type': 'assigned'",
                 "Hi, this is Alice. Let me look.", "'type': 'closed'"):
        assert seen in c_out, f"{seen!r} not in the customer's output:\n{c_out}"
    for seen in ("'type': 'ready'", "'type': 'offer'", "How do I track my parcel?", "'type': 'assigned'",
                 "'type': 'ack'", "'type': 'closed'"):
        assert seen in a_out, f"{seen!r} not in the agent's output:\n{a_out}"


async def leave_a_conversation_with_alice(gateway: GatewayProcess) -> None:
    """An earlier conversation Alice accepted and did not close, as after an earlier try: her
    agent script is replayed it on connecting (within desk.disconnect_grace it stays hers)."""
    import json

    import websockets

    async def until(ws: "websockets.ClientConnection", kind: str) -> dict:
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame

    async with websockets.connect(gateway.url("/webchat/ws")) as customer, \
            websockets.connect(gateway.url("/agent/ws")) as alice:
        await customer.send(json.dumps({"type": "hello", "token": None, "last_seq": 0, "name": "Earlier"}))
        await customer.send(json.dumps({"type": "message", "id": "e1", "text": "agent please"}))
        await alice.send(json.dumps({"type": "auth", "token": "demo-alice-token"}))
        offer = await until(alice, "offer")
        await alice.send(json.dumps({"type": "accept", "conversation_id": offer["conversation"]["id"]}))
        await until(alice, "assigned")


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=30)


def test_make_help_lists_the_targets_the_readme_names() -> None:
    listed = make("help").stdout
    for target in ("run", "test", "check-config", "simulate", "reset", "bench", "clean"):
        assert f"make {target} " in listed, listed
        assert f"`{target}`" in README or f"make {target}" in README, target


def test_make_reset_removes_the_demo_database_and_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text((REPO / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("contactgate.db", "contactgate.db-wal", "contactgate.db-shm", "keep.txt"):
        (data / name).write_text("x")
    done = make("reset", f"CONFIG={config}")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in data.iterdir()) == ["keep.txt"]
    assert make("reset", f"CONFIG={config}").returncode == 0  # nothing to remove: still fine
    # It is the file the shipped config's default store.url names, and make clean removes it too.
    assert "${CONTACTGATE_STORE_URL:-sqlite:///data/contactgate.db}" in config.read_text()
    assert "rm -f './data/contactgate.db'" in make("-n", "clean").stdout


def test_the_simulate_and_check_config_commands_run() -> None:
    # make simulate runs exactly the command the README spells out for the venv.
    planned = make("-n", "simulate", "ARGS=--email someone@vip.example --text agent").stdout
    assert ".venv/bin/contactgate simulate 'config.yaml' --email someone@vip.example --text agent" in planned
    assert "make simulate ARGS='--email someone@vip.example --text agent'" in README
    # (python -m gateway.cli is what .venv/bin/contactgate runs; cwd=REPO: this checkout's code)
    simulated = subprocess.run([sys.executable, "-m", "gateway.cli", "simulate", "config.yaml",
                                "--email", "someone@vip.example", "--text", "agent"],
                               cwd=REPO, capture_output=True, text=True, timeout=30)
    assert simulated.returncode == 0, simulated.stderr
    assert "vip_desk" in simulated.stdout
    checked = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "config.yaml"],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "ok" in checked.stdout, checked.stderr
    assert "warning" not in checked.stdout + checked.stderr  # the shipped config has nothing to warn about
