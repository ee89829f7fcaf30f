"""Issue 11 end to end: incremental snapshots through the official Python client, on local
disk and on the real S3 server, measured with the storage's own byte counts (boto3 for the
bucket, file sizes for the snapshots directory)."""
import hashlib
import os
import threading
import time
import uuid
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from helpers import assert_same_points, wait_for
from test_s3 import s3_env

P = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__"
MIB = 1 << 20
DIM = 128


class Storage:
    """Where a server keeps its snapshots, and how many bytes it holds there."""

    def __init__(self, kind, root: Path):
        self.kind = kind
        self.prefix = f"e2e-inc-{uuid.uuid4().hex}"
        self.dir = root / "snapshots"
        if kind == "s3":
            self.env = s3_env(self.prefix)
            self.bucket = os.environ["S3_TEST_BUCKET"]
            self.s3 = boto3.client(
                "s3", endpoint_url=os.environ["S3_TEST_ENDPOINT"], region_name=os.environ["S3_TEST_REGION"],
                aws_access_key_id=os.environ["S3_TEST_ACCESS_KEY"],
                aws_secret_access_key=os.environ["S3_TEST_SECRET_KEY"])
        else:
            self.env = {}

    def objects(self):
        """Every stored object (key → size), as the storage itself reports."""
        if self.kind == "s3":
            out = {}
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                           Prefix=self.prefix + "/"):
                for o in page.get("Contents", []):
                    out[o["Key"]] = o["Size"]
            return out
        out = {}
        for root, _, files in os.walk(self.dir):
            for f in files:
                p = Path(root) / f
                try:
                    out[str(p.relative_to(self.dir))] = p.stat().st_size
                except FileNotFoundError:
                    pass  # collected by the service between listing and stat
        return out

    def bytes(self):
        return sum(self.objects().values())

    def open_uploads(self):
        if self.kind != "s3":
            return []
        r = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix + "/")
        return r.get("Uploads", [])

    def location(self, collection, name):
        """The recovery location that names the stored snapshot itself (s3:// or file://)."""
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}/{collection}/{name}"
        return (self.dir / collection / name).as_uri()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    return Storage(request.param, tmp_path)


def grpc(server):
    return QdrantClient(host="127.0.0.1", port=server.port, grpc_port=server.grpc_port, prefer_grpc=True,
                        https=False, timeout=120)


def load(server, name, n, seed=1):
    """Creates `name` with n points of DIM dimensions and a payload each, over gRPC (fast)."""
    g = grpc(server)
    g.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    rnd = np.random.default_rng(seed)
    for start in range(0, n, 5000):
        ids = list(range(start, min(n, start + 5000)))
        g.upsert(name, models.Batch(ids=ids, vectors=rnd.random((len(ids), DIM), dtype=np.float32).tolist(),
                                    payloads=[{"doc": f"d{i}", "round": 0} for i in ids]), wait=True)


def change_one_percent(server, name, n, round_no):
    """Overwrites 1% of the points (vectors and payloads) and deletes a few."""
    g = grpc(server)
    rnd = np.random.default_rng(1000 + round_no)
    ids = sorted(set(rnd.integers(0, n, n // 100).tolist()))
    g.upsert(name, models.Batch(ids=ids, vectors=rnd.random((len(ids), DIM), dtype=np.float32).tolist(),
                                payloads=[{"doc": f"d{i}", "round": round_no} for i in ids]), wait=True)
    g.delete(name, models.PointIdsList(points=ids[:5]), wait=True)


def download(url):
    r = httpx.get(url, timeout=300)
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    return r.content


def test_incremental_contract(make_server, storage, tmp_path):
    n = 80_000  # ~45 MiB logical: large enough for the 2% + 8 MiB bound to mean something
    server = make_server(root=tmp_path, env={**storage.env, P + "INCREMENTAL": "true"})
    client = QdrantClient(url=server.url, timeout=300)
    load(server, "papers", n)
    assert storage.bytes() == 0

    first = client.create_snapshot("papers")
    after_first = storage.bytes()
    # The first snapshot stores about its whole logical size (pieces plus a manifest).
    assert 0.9 * first.size <= after_first <= first.size + 2 * MIB, (after_first, first.size)

    change_one_percent(server, "papers", n, 1)
    second = client.create_snapshot("papers")
    added = storage.bytes() - after_first
    assert added <= 0.02 * second.size + 8 * MIB, (added, second.size)
    assert second.size > 40 * MIB

    # List: logical sizes and the plain tar's SHA-256.
    listed = {s.name: s for s in client.list_snapshots("papers")}
    assert set(listed) == {first.name, second.name}
    bodies = {}
    for d in (first, second):
        assert (listed[d.name].size, listed[d.name].checksum) == (d.size, d.checksum)
        url = f"{server.url}/collections/papers/snapshots/{d.name}"
        body = download(url)
        assert len(body) == d.size and hashlib.sha256(body).hexdigest() == d.checksum
        assert download(url) == body  # byte-identical every time
        head = httpx.head(url, timeout=30)
        assert head.headers.get("x-checksum-sha256") == d.checksum
        part = httpx.get(url, headers={"range": f"bytes={5 * MIB - 7}-{9 * MIB}"}, timeout=60)
        assert part.status_code == 206 and part.content == body[5 * MIB - 7:9 * MIB + 1]
        bodies[d.name] = body

    # Recover by URL, by the storage's own location, and by upload, into new collections.
    url = f"{server.url}/collections/papers/snapshots/{second.name}"
    assert client.recover_snapshot("by_url", location=url, checksum=second.checksum)
    assert client.recover_snapshot("by_location", location=storage.location("papers", second.name))
    path = tmp_path / "second.snapshot"
    path.write_bytes(bodies[second.name])
    with open(path, "rb") as f:
        r = httpx.post(f"{server.url}/collections/by_upload/snapshots/upload?wait=true",
                       files={"snapshot": f}, timeout=300)
    assert r.status_code == 200, r.text
    for name in ("by_url", "by_location", "by_upload"):
        assert_same_points(client, "papers", name)
    # By bare name into the source collection: back to the first snapshot's state.
    assert client.recover_snapshot("papers", location=first.name)
    assert client.count("papers").count == n
    assert client.retrieve("papers", [0])[0].payload["round"] == 0

    # A downloaded incremental snapshot recovers at start-up on a plain (non-incremental) server.
    other = make_server(root=tmp_path / "plain", args=["--snapshot", f"{path}:copy"])
    assert QdrantClient(url=other.url, timeout=120).count("copy").count == client.count("by_upload").count
    other.stop()

    # Full snapshots: a second one of unchanged collections adds only its metadata.
    full1 = client.create_full_snapshot()
    before = storage.bytes()
    full2 = client.create_full_snapshot()
    assert storage.bytes() - before <= 1 * MIB, storage.bytes() - before
    for d in (full1, full2):
        body = download(f"{server.url}/snapshots/{d.name}")
        assert hashlib.sha256(body).hexdigest() == d.checksum and len(body) == d.size

    # Independence: deleting one snapshot leaves the other whole.
    assert client.delete_snapshot("papers", first.name)
    assert hashlib.sha256(download(url)).hexdigest() == second.checksum

    # Deleting everything frees everything within 60 s.
    for name in ("papers", "by_url", "by_location", "by_upload"):
        for s in client.list_snapshots(name):
            assert client.delete_snapshot(name, s.name)
    for s in client.list_full_snapshots():
        assert client.delete_full_snapshot(s.name)
    wait_for(lambda: storage.bytes() == 0, 60, f"storage emptied; left: {storage.objects()}")
    assert storage.open_uploads() == []


def test_ten_rounds_cost_ten_times_one(make_server, storage, tmp_path):
    """Compaction and ordinary writes must not make later rounds re-upload unchanged data."""
    n = 40_000
    server = make_server(root=tmp_path, env={**storage.env, P + "INCREMENTAL": "true"})
    client = QdrantClient(url=server.url, timeout=300)
    load(server, "papers", n)
    client.create_snapshot("papers")
    base = storage.bytes()
    for round_no in range(1, 11):
        change_one_percent(server, "papers", n, round_no)
        last = client.create_snapshot("papers")
    added = storage.bytes() - base
    assert added <= 10 * (0.02 * last.size + 8 * MIB), (added, last.size)
    assert len(client.list_snapshots("papers")) == 11
    # And every round is a whole backup: the newest recovers to what the collection holds.
    assert client.recover_snapshot("copy", location=f"{server.url}/collections/papers/snapshots/{last.name}")
    assert_same_points(client, "papers", "copy")


def test_schedule_and_retention(make_server, tmp_path):
    server = make_server(root=tmp_path, env={P + "INCREMENTAL": "true", P + "SCHEDULE__INTERVAL_SEC": "1",
                                             P + "RETENTION__KEEP_LAST": "2"})
    client = QdrantClient(url=server.url, timeout=120)
    load(server, "papers", 2000)
    wait_for(lambda: len(client.list_snapshots("papers")) == 1, 20, "a scheduled snapshot")
    # An unchanged collection is not snapshotted again. A second collection that keeps
    # changing is snapshotted at every tick: two new snapshots of it prove two ticks passed,
    # whatever the machine's speed, and papers still has its one.
    load(server, "ticker", 10)
    stop = threading.Event()

    def tick_source():
        g = grpc(server)
        i = 0
        while not stop.is_set():
            g.upsert("ticker", models.Batch(ids=[i % 10], vectors=[[float(i)] * DIM],
                                            payloads=[{"i": i}]), wait=True)
            i += 1
            time.sleep(0.05)

    changing = threading.Thread(target=tick_source)
    changing.start()
    ticker_names = set()

    def two_ticks():
        ticker_names.update(s.name for s in client.list_snapshots("ticker"))
        return len(ticker_names) >= 3  # the first tick's, then two more
    try:
        wait_for(two_ticks, 30, "two scheduled snapshots of a changing collection")
    finally:
        stop.set()
        changing.join()
    assert len(client.list_snapshots("papers")) == 1
    # Each change gets a snapshot at the next tick; only the newest two are kept.
    seen = set()
    for round_no in range(1, 4):
        before = {s.name for s in client.list_snapshots("papers")}
        change_one_percent(server, "papers", 2000, round_no)
        wait_for(lambda: {s.name for s in client.list_snapshots("papers")} - before, 20, "a new snapshot")
        names = [s.name for s in client.list_snapshots("papers")]
        assert len(names) <= 2
        seen.update(names)
    assert len(seen) >= 4
    newest = max(client.list_snapshots("papers"), key=lambda s: s.creation_time)
    body = download(f"{server.url}/collections/papers/snapshots/{newest.name}")
    assert hashlib.sha256(body).hexdigest() == newest.checksum

    # A failing scheduled snapshot is logged and retried; the service keeps serving.
    blocker = tmp_path / "snapshots" / "papers"
    for s in client.list_snapshots("papers"):
        client.delete_snapshot("papers", s.name)
    wait_for(lambda: not blocker.exists() or not any(blocker.iterdir()), 30, "snapshots deleted")
    if blocker.exists():
        blocker.rmdir()
    blocker.write_text("not a directory")
    change_one_percent(server, "papers", 2000, 9)
    wait_for(lambda: "scheduled snapshot failed" in server.log.read_text(), 20, "the failure logged")
    assert client.count("papers").count > 0
    blocker.unlink()
    wait_for(lambda: len(client.list_snapshots("papers")) == 1, 20, "the retried snapshot")

    # Retention keeps full snapshots too.
    for _ in range(3):
        client.create_full_snapshot()
    assert len(client.list_full_snapshots()) == 2


def test_kill_9_during_incremental_create(make_server, storage, tmp_path):
    n = 120_000
    server = make_server(root=tmp_path, env={**storage.env, P + "INCREMENTAL": "true"})
    client = QdrantClient(url=server.url, timeout=300)
    load(server, "papers", n)
    old = client.create_snapshot("papers")
    interrupted = 0
    # The first delays are short: with sealed segments linked on local disk, a create of
    # this collection can finish within 50 ms.
    for round_no, delay in enumerate((0.0, 0.01, 0.05, 0.2, 0.5), start=1):
        change_one_percent(server, "papers", n, round_no)
        listed_before = len(client.list_snapshots("papers"))
        r = httpx.post(f"{server.url}/collections/papers/snapshots?wait=false", timeout=30)
        assert r.status_code in (200, 202), r.text
        time.sleep(delay)
        server.kill9()
        server.start()
        client = QdrantClient(url=server.url, timeout=300)
        interrupted += len(client.list_snapshots("papers")) == listed_before
        # Nothing partial is listed: whatever is listed downloads whole.
        for s in client.list_snapshots("papers"):
            body = download(f"{server.url}/collections/papers/snapshots/{s.name}")
            assert hashlib.sha256(body).hexdigest() == s.checksum and len(body) == s.size
        # The older snapshot lost no piece.
        assert old.name in {s.name for s in client.list_snapshots("papers")}
    assert interrupted >= 1, "every create finished before its kill: nothing was tested"
    assert storage.open_uploads() == []
    # What the killed creates uploaded is collected once nothing refers to it.
    for s in client.list_snapshots("papers"):
        assert client.delete_snapshot("papers", s.name)
    wait_for(lambda: storage.bytes() == 0, 60, f"storage emptied; left: {storage.objects()}")
