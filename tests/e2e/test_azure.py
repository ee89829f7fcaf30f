"""Issue 23 end to end: snapshots, incremental snapshots and backups of a real Qdrant kept in
Azure Blob Storage (Azurite, started by emulators/start.sh), configured only through QDRANT__
variables, driven with the official client; what lands in the container is read back with
Microsoft's own client."""
import hashlib
import os
import uuid

import httpx
import pytest
from azure.storage.blob import ContainerClient
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from helpers import assert_same_points, fill, top_ids, wait_for
from qdrant import API_KEY, Deployment, qdrant_bin


def azure_var(name):
    try:
        return os.environ[name]
    except KeyError:
        pytest.fail(f"{name} is not set: run `make test` (it starts the emulators)")


def azure_env(prefix, incremental=False):
    p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__"
    return {
        p + "SNAPSHOTS_STORAGE": "azure",
        p + "INCREMENTAL": "true" if incremental else "false",
        p + "AZURE_CONFIG__CONTAINER": azure_var("AZURE_TEST_CONTAINER"),
        p + "AZURE_CONFIG__ACCOUNT": azure_var("AZURE_TEST_ACCOUNT"),
        p + "AZURE_CONFIG__ACCESS_KEY": azure_var("AZURE_TEST_KEY"),
        p + "AZURE_CONFIG__ENDPOINT_URL": azure_var("AZURE_TEST_ENDPOINT"),
        p + "AZURE_CONFIG__PREFIX": prefix,
        p + "AZURE_CONFIG__PART_SIZE": str(5 << 20),
    }


def blobs(prefix):
    """Every blob under `prefix`, as Azure's own client lists it: name -> size."""
    container = ContainerClient(azure_var("AZURE_TEST_ENDPOINT"), azure_var("AZURE_TEST_CONTAINER"),
                                credential={"account_name": azure_var("AZURE_TEST_ACCOUNT"),
                                            "account_key": azure_var("AZURE_TEST_KEY")})
    return {b.name: b.size for b in container.list_blobs(name_starts_with=prefix + "/")}


@pytest.fixture
def azure_server(make_server):
    prefix = f"e2e-{uuid.uuid4().hex}"
    server = make_server(env=azure_env(prefix))
    server.prefix = prefix
    return server


def test_azure_snapshot_tutorial(azure_server, tmp_path):
    server = azure_server
    client = QdrantClient(url=server.url, timeout=120)
    vecs = fill(client, "papers", n=3000)
    desc = client.create_snapshot("papers")
    assert desc.checksum and len(desc.checksum) == 64
    assert not (tmp_path / "snapshots" / "papers").exists()
    stored = blobs(server.prefix)
    assert stored[f"{server.prefix}/papers/{desc.name}"] == desc.size
    assert f"{server.prefix}/papers/{desc.name}.checksum" in stored
    listed = client.list_snapshots("papers")
    assert [(s.name, s.size, s.checksum) for s in listed] == [(desc.name, desc.size, desc.checksum)]
    url = f"{server.url}/collections/papers/snapshots/{desc.name}"
    r = httpx.get(url, timeout=120)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == desc.checksum
    part = httpx.get(url, headers={"range": "bytes=1000-1999"}, timeout=60)
    assert part.status_code == 206 and part.content == r.content[1000:2000]

    container = azure_var("AZURE_TEST_CONTAINER")
    assert client.recover_snapshot("from_url", location=url, checksum=desc.checksum)
    assert client.recover_snapshot("from_az", location=f"az://{container}/{server.prefix}/papers/{desc.name}")
    assert client.recover_snapshot("papers", location=desc.name)
    for name in ("from_url", "from_az"):
        assert_same_points(client, "papers", name)
        assert top_ids(client, name, vecs[3]) == top_ids(client, "papers", vecs[3])
    for location, status in ((f"az://other/{server.prefix}/papers/{desc.name}", 400),
                             (f"az://{container}/elsewhere/{desc.name}", 400),
                             (f"s3://{container}/{server.prefix}/papers/{desc.name}", 400),
                             (f"az://{container}/{server.prefix}/papers/missing.snapshot", 404)):
        with pytest.raises(UnexpectedResponse) as e:
            client.recover_snapshot("x", location=location)
        assert e.value.status_code == status, location

    assert client.delete_snapshot("papers", desc.name) is True
    assert client.list_snapshots("papers") == []
    wait_for(lambda: blobs(server.prefix) == {}, 30, "the snapshot and its sidecar deleted")


def test_azure_incremental_snapshots_share_pieces_and_are_collected(make_server):
    prefix = f"e2e-inc-{uuid.uuid4().hex}"
    server = make_server(env=azure_env(prefix, incremental=True))
    client = QdrantClient(url=server.url, timeout=120)
    fill(client, "papers", n=3000)
    first = client.create_snapshot("papers")
    after_first = blobs(prefix)
    second = client.create_snapshot("papers")
    after_second = blobs(prefix)
    # The second snapshot of unchanged data adds its manifest (and sidecar), no piece.
    new = set(after_second) - set(after_first)
    assert new and all("/pieces/" not in name for name in new), new
    for desc in (first, second):
        r = httpx.get(f"{server.url}/collections/papers/snapshots/{desc.name}", timeout=120)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == desc.checksum
    assert client.recover_snapshot("copy", location=f"{server.url}/collections/papers/snapshots/{second.name}")
    assert_same_points(client, "papers", "copy")
    for desc in (first, second):
        assert client.delete_snapshot("papers", desc.name) is True
    # Every piece is collected once no snapshot refers to it.
    wait_for(lambda: not any("/pieces/" in n for n in blobs(prefix)), 60, "pieces collected")


def test_backup_of_a_qdrant_node_into_azure_restores_point_by_point(make_server, tmp_path):
    qdrant_bin()
    source = Deployment(tmp_path / "source", cluster=False)
    target = Deployment(tmp_path / "target", cluster=False)
    try:
        q = source.client()
        q.create_collection("notes", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
        q.upsert("notes", [models.PointStruct(id=i, vector=[i, 1, 2, 3], payload={"n": i}) for i in range(200)],
                 wait=True)
        served = {p.id: (p.payload, p.vector) for p in q.scroll("notes", limit=1000, with_payload=True,
                                                                  with_vectors=True)[0]}
        prefix = f"e2e-backup-{uuid.uuid4().hex}"
        env = azure_env(prefix)
        env.update({"QDRANT__BACKUP__SOURCES__PROD__URL": source.url,
                    "QDRANT__BACKUP__SOURCES__PROD__API_KEY": API_KEY})
        server = make_server(env=env)
        r = httpx.post(f"{server.url}/backup/sources/prod/backups?wait=true", timeout=600)
        assert r.status_code == 200, r.text
        done = r.json()["result"]
        assert done["stored_bytes"] > 0 and any("/pieces/" in n for n in blobs(prefix))
        r = httpx.post(f"{server.url}/backup/sources/prod/backups/{done['id']}/restore?wait=true",
                       json={"to": target.url, "api_key": API_KEY}, timeout=600)
        assert r.status_code == 200, r.text
        t = target.client()
        restored = {p.id: (p.payload, p.vector) for p in t.scroll("notes", limit=1000, with_payload=True,
                                                                    with_vectors=True)[0]}
        assert restored == served
    finally:
        source.stop()
        target.stop()
