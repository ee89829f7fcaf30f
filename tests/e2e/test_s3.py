"""Issue 4 end to end: the snapshot tutorial with S3 storage configured only through
QDRANT__ environment variables, against the real S3 server from minio/start.sh."""
import hashlib
import os
import uuid

import httpx
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from helpers import assert_same_points, fill, top_ids, vectors


def s3_env(prefix):
    try:
        endpoint = os.environ["S3_TEST_ENDPOINT"]
    except KeyError:
        pytest.fail("S3_TEST_ENDPOINT is not set: run `make test` (it starts the S3 server)")
    p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__"
    return {
        p + "SNAPSHOTS_STORAGE": "s3",
        p + "S3_CONFIG__BUCKET": os.environ["S3_TEST_BUCKET"],
        p + "S3_CONFIG__REGION": os.environ["S3_TEST_REGION"],
        p + "S3_CONFIG__ACCESS_KEY": os.environ["S3_TEST_ACCESS_KEY"],
        p + "S3_CONFIG__SECRET_KEY": os.environ["S3_TEST_SECRET_KEY"],
        p + "S3_CONFIG__ENDPOINT_URL": endpoint,
        p + "S3_CONFIG__PREFIX": prefix,
        p + "S3_CONFIG__PART_SIZE": str(5 << 20),
    }


@pytest.fixture
def s3_server(make_server):
    prefix = f"e2e-{uuid.uuid4().hex}"
    server = make_server(env=s3_env(prefix))
    server.prefix = prefix
    return server


def test_s3_snapshot_tutorial(s3_server, tmp_path):
    server = s3_server
    client = QdrantClient(url=server.url, timeout=120)
    vecs = fill(client, "papers", n=1000)
    desc = client.create_snapshot("papers")
    assert desc.checksum and len(desc.checksum) == 64 and desc.creation_time
    # Nothing of the snapshot was written to local disk.
    assert not (tmp_path / "snapshots" / "papers").exists()
    listed = client.list_snapshots("papers")
    assert [(s.name, s.size, s.checksum) for s in listed] == [(desc.name, desc.size, desc.checksum)]
    url = f"{server.url}/collections/papers/snapshots/{desc.name}"
    r = httpx.get(url, timeout=120)
    assert r.status_code == 200 and int(r.headers["content-length"]) == desc.size
    assert hashlib.sha256(r.content).hexdigest() == desc.checksum
    part = httpx.get(url, headers={"range": "bytes=1000-1999"}, timeout=60)
    assert part.status_code == 206 and part.content == r.content[1000:2000]

    # Recover from the URL, from the bare name, and from s3://bucket/key.
    assert client.recover_snapshot("from_url", location=url, priority=models.SnapshotPriority.SNAPSHOT,
                                   checksum=desc.checksum)
    bucket = os.environ["S3_TEST_BUCKET"]
    assert client.recover_snapshot("papers", location=desc.name)
    assert client.recover_snapshot("from_s3", location=f"s3://{bucket}/{server.prefix}/papers/{desc.name}")
    for name in ("from_url", "from_s3"):
        assert_same_points(client, "papers", name)
        assert top_ids(client, name, vecs[3]) == top_ids(client, "papers", vecs[3])
    with pytest.raises(UnexpectedResponse) as e:
        client.recover_snapshot("x", location=f"s3://{bucket}/elsewhere/{desc.name}")
    assert e.value.status_code == 400
    with pytest.raises(UnexpectedResponse) as e:
        client.recover_snapshot("x", location=f"s3://{bucket}/{server.prefix}/papers/missing.snapshot")
    assert e.value.status_code == 404

    assert client.delete_snapshot("papers", desc.name) is True
    assert client.list_snapshots("papers") == []
    with pytest.raises(UnexpectedResponse) as e:
        client.delete_snapshot("papers", desc.name)
    assert e.value.status_code == 404


def test_s3_full_snapshot_and_restart(s3_server):
    client = QdrantClient(url=s3_server.url, timeout=120)
    fill(client, "a", n=50, dim=8)
    fill(client, "b", n=70, dim=8)
    col = client.create_snapshot("a")
    full = client.create_full_snapshot()
    # One streamed archive: no collection snapshot of `b` was stored to build it.
    assert client.list_snapshots("b") == []
    assert [s.name for s in client.list_full_snapshots()] == [full.name]
    assert [s.name for s in client.list_snapshots("a")] == [col.name]
    r = httpx.get(f"{s3_server.url}/snapshots/{full.name}", timeout=120)
    assert hashlib.sha256(r.content).hexdigest() == full.checksum
    s3_server.restart()
    client = QdrantClient(url=s3_server.url, timeout=120)
    assert [s.checksum for s in client.list_full_snapshots()] == [full.checksum]
    assert client.delete_full_snapshot(full.name)
    assert client.list_full_snapshots() == []
    # A collection's snapshots in the bucket stay recoverable by bare name after a restart.
    q = vectors(1, dim=8, seed=1)[0]
    before = top_ids(client, "a", q)
    client.delete("a", points_selector=models.PointIdsList(points=list(range(25))), wait=True)
    assert client.count("a").count == 25
    assert client.recover_snapshot("a", location=col.name)
    assert client.count("a").count == 50
    assert top_ids(client, "a", q) == before


def test_s3_snapshots_over_grpc(s3_server):
    """The same snapshot calls over gRPC (prefer_grpc=True) store into the bucket."""
    server = s3_server
    g = QdrantClient(host="127.0.0.1", port=server.port, grpc_port=server.grpc_port,
                     prefer_grpc=True, timeout=120)
    fill(g, "papers", n=300)
    desc = g.create_snapshot("papers")
    assert len(desc.checksum) == 64
    assert [s.name for s in g.list_snapshots("papers")] == [desc.name]
    url = f"{server.url}/collections/papers/snapshots/{desc.name}"
    body = httpx.get(url, timeout=120).content
    assert hashlib.sha256(body).hexdigest() == desc.checksum
    full = g.create_full_snapshot()
    assert [s.name for s in g.list_full_snapshots()] == [full.name]
    assert g.delete_full_snapshot(full.name) is True
    assert g.delete_snapshot("papers", desc.name) is True
    assert g.list_snapshots("papers") == []
