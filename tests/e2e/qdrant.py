"""Real Qdrant peers for the backup tests: a three-node cluster on 127.0.0.1-3 (same ports on
each address, as separate hosts would have) or a single node, each with its own storage.

The binary comes from QDRANT_TEST_BIN (`make test` unpacks Qdrant 1.19 there). Without it the
tests that need Qdrant fail in CI and are skipped elsewhere, with how to run them."""
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import stop_process

API_KEY = "qdrant-test-key"


def qdrant_bin():
    path = os.environ.get("QDRANT_TEST_BIN")
    if path and os.path.exists(path):
        return path
    why = "Qdrant tests need QDRANT_TEST_BIN (make test sets it from QDRANT_BIN or ../shared/bin)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def free_ports(n, hosts):
    """n ports free on every one of hosts."""
    out = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        ok = True
        for h in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
        if ok and port not in out:
            out.append(port)
    return out


class Peer:
    def __init__(self, root: Path, host, ports, bootstrap=None, cluster=True, env=None):
        self.root, self.host = root, host
        self.env = env or {}
        self.http, self.grpc, self.p2p = ports
        self.bootstrap, self.cluster = bootstrap, cluster
        self.proc = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self):
        return f"http://{self.host}:{self.http}"

    @property
    def uri(self):
        return f"http://{self.host}:{self.p2p}"

    def start(self):
        # No proxy of this machine's stands between a peer and the archives it pulls, but
        # one a test names.
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update(self.env)
        env.update({
            "QDRANT__CLUSTER__ENABLED": "true" if self.cluster else "false",
            "QDRANT__SERVICE__HOST": self.host,
            "QDRANT__SERVICE__HTTP_PORT": str(self.http),
            "QDRANT__SERVICE__GRPC_PORT": str(self.grpc),
            "QDRANT__CLUSTER__P2P__PORT": str(self.p2p),
            "QDRANT__STORAGE__STORAGE_PATH": str(self.root / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.root / "snapshots"),
            "QDRANT__TELEMETRY_DISABLED": "true",
            "QDRANT__LOG_LEVEL": "WARN",
            "QDRANT__SERVICE__API_KEY": API_KEY,
        })
        args = [qdrant_bin()]
        if self.cluster:
            args += ["--uri", self.uri] + (["--bootstrap", self.bootstrap] if self.bootstrap else [])
        log = open(self.root / "qdrant.log", "ab")
        self.proc = subprocess.Popen(args, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        return self

    def get(self, path, timeout=5):
        return httpx.get(f"{self.url}{path}", headers={"api-key": API_KEY}, timeout=timeout)

    def wait(self, ready, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qdrant exited:\n{(self.root / 'qdrant.log').read_text()[-3000:]}")
            try:
                if ready(self):
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"qdrant at {self.url} did not become ready")

    def stop(self):
        stop_process(self.proc)

    def snapshot_files(self):
        """Snapshot files left on this node (Qdrant's own work directories aside)."""
        d = self.root / "snapshots"
        if not d.exists():
            return []
        return [p for p in d.rglob("*") if p.is_file() and "tmp" not in p.relative_to(d).parts]


class Deployment:
    """A cluster of `n` peers, or a single node with cluster mode off."""

    def __init__(self, root: Path, n=3, cluster=True, hosts=("127.0.0.1", "127.0.0.2", "127.0.0.3"), env=None):
        hosts = list(hosts[:n]) if cluster else ["127.0.0.1"]
        ports = free_ports(3, hosts)
        first = None
        self.peers = []
        for i, h in enumerate(hosts):
            p = Peer(root / f"peer{i}", h, ports, bootstrap=first.uri if first else None, cluster=cluster, env=env)
            self.peers.append(p)
            p.start()
            if first is None:
                first = p
                p.wait(lambda q: q.get("/cluster" if cluster else "/").status_code == 200)
        if cluster:
            n = len(self.peers)
            first.wait(lambda q: len(q.get("/cluster").json()["result"]["peers"]) == n)

    @property
    def url(self):
        return self.peers[0].url

    def client(self):
        from qdrant_client import QdrantClient
        return QdrantClient(url=self.url, api_key=API_KEY, timeout=120)

    def stop(self):
        for p in self.peers:
            p.stop()

    def snapshot_files(self):
        return [f for p in self.peers for f in p.snapshot_files()]
