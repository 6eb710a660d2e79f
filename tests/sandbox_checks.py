"""What the sandbox tests share: whether bubblewrap can run here, a listener to aim at, processes by marker."""

import os
import socket
import threading
from pathlib import Path

import pytest

from lora_lab.classroom import sandbox


def need_sandbox() -> sandbox.Isolation:
    """The isolation here. Skips where bubblewrap cannot run (a developer's machine without it), but fails where
    the run requires it (LORA_LAB_REQUIRE_SANDBOX=1, set by CI)."""
    try:
        return sandbox.detect()
    except sandbox.SandboxUnavailable as e:
        if os.environ.get("LORA_LAB_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"LORA_LAB_REQUIRE_SANDBOX=1 and {e}")
        pytest.skip(f"the grader needs its sandbox: {e}")


class Listener:
    """A TCP listener on 127.0.0.1 that records whatever reaches it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port, self.received, self.stop = self.sock.getsockname()[1], [], False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(100))
                except OSError:
                    self.received.append(b"(connected)")

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def processes(marker: str) -> list[int]:
    """Every process whose command line holds marker."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found
