"""Exact query latency over 150,000 x 768 (Cosine), two or more builds alternated.

Loads 150,000 random points with a payload each once over REST (into BENCH_DIR, default
/tmp/query-latency), then for each round starts every binary given in turn on that storage,
sends 30 warm-up and 200 timed top-10 `points/query` calls, and prints p50 and p99 of the
timed ones and the first and slowest of the warm-up (the first query after a start-up);
last, whether every binary returned the same ids and scores for the same queries.

    .venv/bin/python examples/bench/query_latency.py BINARY [BINARY...]   (ROUNDS=3)
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import requests

ROOT = os.environ.get("BENCH_DIR", "/tmp/query-latency")
PORT = 16433
URL = f"http://127.0.0.1:{PORT}"


def start(binary, ready="/collections"):
    env = dict(
        os.environ,
        QDRANT__STORAGE__STORAGE_PATH=f"{ROOT}/storage",
        QDRANT__STORAGE__SNAPSHOTS_PATH=f"{ROOT}/snapshots",
        QDRANT__SERVICE__HTTP_PORT=str(PORT),
        QDRANT__SERVICE__GRPC_PORT=str(PORT + 1),
    )
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{URL}{ready}", timeout=1).ok:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"{binary} did not answer on {URL}")


def load():
    rng = np.random.default_rng(7)
    requests.put(f"{URL}/collections/q", json={"vectors": {"size": 768, "distance": "Cosine"}}).raise_for_status()
    for b in range(150):
        v = rng.standard_normal((1000, 768), dtype=np.float32)
        points = [{"id": b * 1000 + i, "vector": v[i].tolist(), "payload": {"n": b * 1000 + i}} for i in range(1000)]
        requests.put(f"{URL}/collections/q/points?wait=true", json={"points": points}).raise_for_status()


def measure():
    rng = np.random.default_rng(11)
    session, latencies, warm_up, answers = requests.Session(), [], [], []
    for i in range(230):
        query = rng.standard_normal(768, dtype=np.float32).tolist()
        t = time.perf_counter()
        r = session.post(f"{URL}/collections/q/points/query", json={"query": query, "limit": 10})
        ms = (time.perf_counter() - t) * 1000
        r.raise_for_status()
        (latencies if i >= 30 else warm_up).append(ms)
        answers.append([(p["id"], p["score"]) for p in r.json()["result"]["points"]])
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    return p50, p99, (warm_up[0], max(warm_up)), answers


def main():
    binaries = sys.argv[1:]
    if not binaries:
        sys.exit(__doc__)
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    proc = start(binaries[0])
    load()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    answers = {}
    for round_ in range(int(os.environ.get("ROUNDS", "3"))):
        for binary in binaries:
            proc = start(binary, "/collections/q")
            p50, p99, (first_ms, warm_max), got = measure()
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            print(
                f"round {round_} {binary}: p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
                f"first query {first_ms:.1f} ms, slowest warm-up {warm_max:.1f} ms",
                flush=True,
            )
            answers.setdefault(binary, []).append(got)
    first = next(iter(answers.values()))[0]
    same = all(a == first for runs in answers.values() for a in runs)
    print("every binary returned the same ids and scores:", same)


if __name__ == "__main__":
    main()
