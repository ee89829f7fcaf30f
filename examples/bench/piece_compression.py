"""Piece compression (issue 23): stored bytes, create and recovery time of one incremental
snapshot with `compression: none` and `zstd`, on a vectors-only and a payload-heavy collection
of 100,000 points, local storage, alternating rounds. Run from the checkout with the test venv:
`.venv/bin/python examples/bench/piece_compression.py` (after `cargo build --release`)."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import httpx
import numpy as np
from qdrant_client import QdrantClient, models

BIN = os.environ.get("SNAPSTREAM_BIN", "target/release/snapstream")
WORK = tempfile.mkdtemp(prefix="piece-compression-")


def run(comp, kind, port):
    root = f"{WORK}/{comp}-{kind}"
    shutil.rmtree(root, ignore_errors=True); os.makedirs(root)
    env = dict(os.environ, QDRANT__STORAGE__STORAGE_PATH=f"{root}/storage", QDRANT__STORAGE__SNAPSHOTS_PATH=f"{root}/snapshots",
               QDRANT__SERVICE__HTTP_PORT=str(port), QDRANT__SERVICE__GRPC_PORT=str(port+1),
               QDRANT__STORAGE__SNAPSHOTS_CONFIG__INCREMENTAL="true",
               QDRANT__STORAGE__SNAPSHOTS_CONFIG__COMPRESSION=comp, QDRANT__LOG_LEVEL="warn")
    p = subprocess.Popen([BIN], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url); break
        except Exception: time.sleep(0.1)
    c = QdrantClient(host="127.0.0.1", port=port, grpc_port=port+1, prefer_grpc=True, timeout=300)
    n, dim = (100_000, 128) if kind == "vectors" else (100_000, 16)
    c.create_collection("c", vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
    rnd = np.random.default_rng(1)
    words = ["alpha", "beta", "gamma", "delta", "vector", "search", "snapshot", "backup", "storage", "qdrant"]
    for s in range(0, n, 5000):
        ids = list(range(s, s + 5000))
        pay = [{"i": i} for i in ids] if kind == "vectors" else \
              [{"i": i, "title": " ".join(rnd.choice(words, 8)), "body": " ".join(rnd.choice(words, 120)),
                "tags": list(rnd.choice(words, 5))} for i in ids]
        c.upsert("c", models.Batch(ids=ids, vectors=rnd.random((5000, dim), dtype=np.float32).tolist(), payloads=pay), wait=True)
    t = time.time(); d = c.create_snapshot("c"); create = time.time() - t
    pieces = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(f"{root}/snapshots/.repository/pieces") for f in fs)
    t = time.time(); c.recover_snapshot("c2", location=f"{url}/collections/c/snapshots/{d.name}"); rec = time.time() - t
    p.terminate(); p.wait()
    shutil.rmtree(root, ignore_errors=True)
    return dict(comp=comp, kind=kind, logical=d.size, stored=pieces, ratio=round(pieces / d.size, 3), create_s=round(create, 2), recover_s=round(rec, 2))


port = 17000
for kind in ("vectors", "payload"):
    for rnd in range(2):
        for comp in ("none", "zstd"):
            print(json.dumps(run(comp, kind, port)), flush=True); port += 10
