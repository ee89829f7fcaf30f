"""Runs the real `snapstream` binary and drives it with the official qdrant-client."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

BIN = os.environ.get("SNAPSTREAM_BIN", "target/release/snapstream")


def stop_process(proc):
    """SIGTERM, then SIGKILL if it has not ended within 20 s."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One service process with its own storage, restartable on the same data."""

    def __init__(self, root: Path, env=None, args=None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.grpc_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "QDRANT__SERVICE__HTTP_PORT": str(self.port),
            "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
            "QDRANT__STORAGE__STORAGE_PATH": str(root / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(root / "snapshots"),
            "RUST_LOG": "info",
        })
        self.env.update(env or {})
        self.args = list(args or [])
        self.proc = None
        self.log = root / f"server-{self.port}.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, args=None, wait=True):
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([os.path.abspath(BIN), *(args if args is not None else self.args)],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"snapstream exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"snapstream did not become ready:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        stop_process(self.proc)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()

    def run_once(self, args, timeout=120):
        """Runs the binary to completion (for start-up errors); returns (code, output)."""
        p = subprocess.run([os.path.abspath(BIN), *args], env=self.env, cwd=self.root,
                           capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(env=None, args=None, root=None, start=True):
        s = Server(root or tmp_path, env, args)
        servers.append(s)
        return s.start() if start else s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def server(make_server):
    return make_server()
