"""permessage-deflate is off where the project deploys: browsers offer it on every WebSocket and
uvicorn accepts it by default, which costs each connection 2.4 times the memory and each
delivery 1.8 times the CPU for frames of about 120 bytes (docs/operating.md, *Compression*)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn

ROOT = Path(__file__).parent.parent
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"  # what Chromium sends


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def handshake(port: int, path: str) -> str:
    """The server's answer to a WebSocket upgrade that offers compression as Chromium does."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
                f"Sec-WebSocket-Extensions: {CHROMIUM_OFFER}\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n\r\n")[0].decode("latin-1")


@pytest.mark.timeout(60)
def test_the_example_app_declines_the_browsers_compression_offer(tmp_path: Path) -> None:
    """``python -m examples.jobs_dashboard`` (what scripts/demo.sh and run_two.sh run) accepts
    the WebSocket but not permessage-deflate."""
    port = free_port()
    env = dict(os.environ, JOBS_SECRET="x" * 32)
    command = [sys.executable, "-m", "examples.jobs_dashboard", "--port", str(port),
               "--db", str(tmp_path / "jobs.sqlite3")]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.1)
        answer = handshake(port, "/live")
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert answer.startswith("HTTP/1.1 101 "), answer
    assert "sec-websocket-extensions" not in answer.lower(), answer


def test_the_example_app_runs_uvicorn_without_compression(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from examples.jobs_dashboard import __main__ as dashboard

    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.update(options))
    monkeypatch.setattr(sys, "argv", ["jobs_dashboard", "--db", str(tmp_path / "jobs.sqlite3")])
    dashboard.main()
    assert ran["ws_per_message_deflate"] is False


def test_every_documented_uvicorn_command_turns_compression_off() -> None:
    commands = []
    for path in [*ROOT.glob("docs/*.md"), *ROOT.glob("examples/**/*.py")]:
        if path.name not in ("changelog.md", "benchmarks.md"):
            text = path.read_text()
            commands += re.findall(r"`+(uvicorn [^`]*)`", text)
            # and in code blocks: a line that starts with uvicorn and an option or an app
            commands += re.findall(r"^(uvicorn (?:-|\S+:\S).*)$", text, re.MULTILINE)
    assert len(commands) >= 5
    for command in commands:
        assert "--ws-per-message-deflate false" in " ".join(command.split()), command
