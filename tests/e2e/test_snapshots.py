"""Issue 3 end to end: the snapshot tutorial with the official client, start-up recovery
flags, and kill -9 in the middle of a create."""
import hashlib
import os
import time

import httpx
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from helpers import assert_same_points, fill, top_ids, vectors


def download(url):
    r = httpx.get(url, timeout=120)
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    return r.content


def test_collection_snapshot_tutorial(server):
    client = QdrantClient(url=server.url, timeout=120)
    vecs = fill(client, "papers")
    desc = client.create_snapshot("papers")
    assert desc.name.startswith("papers-") and desc.name.endswith(".snapshot")
    assert desc.creation_time and desc.size > 1000 * 768 * 4 and len(desc.checksum) == 64
    listed = client.list_snapshots("papers")
    assert [s.name for s in listed] == [desc.name]
    url = f"{server.url}/collections/papers/snapshots/{desc.name}"
    body = download(url)
    assert hashlib.sha256(body).hexdigest() == desc.checksum
    assert client.recover_snapshot("copy", location=url, priority=models.SnapshotPriority.SNAPSHOT,
                                   checksum=desc.checksum) is True
    assert_same_points(client, "papers", "copy")
    for q in (vecs[1], vectors(1, seed=3)[0]):
        assert top_ids(client, "copy", q) == top_ids(client, "papers", q)
    # A wrong checksum changes nothing and creates nothing.
    with pytest.raises(UnexpectedResponse) as e:
        client.recover_snapshot("other", location=url, checksum="0" * 64)
    assert e.value.status_code == 400
    assert not client.collection_exists("other")
    assert client.delete_snapshot("papers", desc.name) is True
    assert client.list_snapshots("papers") == []


def test_upload_with_the_generated_api(server, tmp_path):
    client = QdrantClient(url=server.url, timeout=120)
    vecs = fill(client, "papers", n=300)
    desc = client.create_snapshot("papers")
    path = tmp_path / "upload_me.snapshot"
    path.write_bytes(download(f"{server.url}/collections/papers/snapshots/{desc.name}"))
    with open(path, "rb") as f:
        res = client.http.snapshots_api.recover_from_uploaded_snapshot(
            collection_name="uploaded", wait=True, priority=models.SnapshotPriority.SNAPSHOT,
            checksum=desc.checksum, snapshot=f)
    assert res.result is True
    assert_same_points(client, "papers", "uploaded")
    assert top_ids(client, "uploaded", vecs[0]) == top_ids(client, "papers", vecs[0])
    # The upload is not kept next to the snapshots (Qdrant keeps it: #10207).
    assert not (tmp_path / "snapshots" / "uploaded").exists()


def test_full_snapshot_and_storage_snapshot_flag(make_server, tmp_path):
    server = make_server(root=tmp_path / "a")
    client = QdrantClient(url=server.url, timeout=120)
    fill(client, "one", n=200)
    fill(client, "two", n=100, dim=16)
    client.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="two", alias_name="deux"))])
    desc = client.create_full_snapshot()
    assert desc.name.startswith("full-snapshot-")
    assert [s.name for s in client.list_full_snapshots()] == [desc.name]
    body = download(f"{server.url}/snapshots/{desc.name}")
    assert hashlib.sha256(body).hexdigest() == desc.checksum
    path = tmp_path / "full.snapshot"
    path.write_bytes(body)

    (tmp_path / "b").mkdir()
    restored = make_server(root=tmp_path / "b", args=["--storage-snapshot", str(path)])
    rclient = QdrantClient(url=restored.url, timeout=120)
    assert sorted(c.name for c in rclient.get_collections().collections) == ["one", "two"]
    assert [(a.alias_name, a.collection_name) for a in rclient.get_aliases().aliases] == [("deux", "two")]
    for name in ("one", "two"):
        assert rclient.count(name).count == client.count(name).count
        assert top_ids(rclient, name, vectors(1, dim=16 if name == "two" else 768, seed=5)[0]) == \
            top_ids(client, name, vectors(1, dim=16 if name == "two" else 768, seed=5)[0])
    restored.stop()
    # Recovering again over existing collections needs --force-snapshot.
    code, out = restored.run_once(["--storage-snapshot", str(path)])
    assert code != 0 and "already exists" in out and "panicked" not in out
    assert client.delete_full_snapshot(desc.name) is True


def test_snapshot_flag_recovers_at_start_up(make_server, tmp_path):
    server = make_server(root=tmp_path / "a")
    client = QdrantClient(url=server.url, timeout=120)
    fill(client, "papers", n=100)
    desc = client.create_snapshot("papers")
    snap = tmp_path / "a" / "snapshots" / "papers" / desc.name
    (tmp_path / "b").mkdir()
    b = make_server(root=tmp_path / "b", start=False)
    for bad, needle in ([f"{snap}:"], "PATH:NAME"), ([f"/nope.snapshot:x"], "cannot open"):
        code, out = b.run_once(["--snapshot", *bad])
        assert code != 0 and needle in out and "panicked" not in out, out
    b.start(args=["--snapshot", f"{snap}:restored"])
    bclient = QdrantClient(url=b.url, timeout=120)
    assert bclient.count("restored").count == 100
    b.stop()
    code, out = b.run_once(["--snapshot", f"{snap}:restored"])
    assert code != 0 and "already exists" in out
    b.start(args=["--snapshot", f"{snap}:restored", "--force-snapshot"])
    assert QdrantClient(url=b.url, timeout=120).count("restored").count == 100


def test_kill_9_during_create_leaves_nothing_partial(server, tmp_path):
    client = QdrantClient(url=server.url, timeout=120)
    fill(client, "big", n=30000, dim=768)
    snapdir = tmp_path / "snapshots" / "big"
    r = httpx.post(f"{server.url}/collections/big/snapshots?wait=false", timeout=30)
    assert r.status_code == 202
    deadline = time.time() + 30
    while time.time() < deadline:
        if snapdir.exists() and any(n.endswith(".tmp") for n in os.listdir(snapdir)):
            break
        time.sleep(0.001)
    else:
        pytest.fail("the snapshot never started writing")
    server.kill9()  # mid-write: a hidden temp file exists right now
    server.start()
    client = QdrantClient(url=server.url, timeout=120)
    assert client.list_snapshots("big") == []
    assert os.listdir(snapdir) == [], "no snapshot, sidecar or temp file is left"
    assert os.listdir(tmp_path / "storage" / ".staging") == []
    assert client.count("big").count == 30000
    # And the next snapshot works.
    assert client.create_snapshot("big").size > 0


def test_read_only_key_may_list_and_download_only(make_server):
    server = make_server(env={"QDRANT__SERVICE__API_KEY": "k", "QDRANT__SERVICE__READ_ONLY_API_KEY": "r"})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        full = QdrantClient(url=server.url, api_key="k", timeout=120)
        ro = QdrantClient(url=server.url, api_key="r", timeout=120)
    fill(full, "c", n=10, dim=4)
    desc = full.create_snapshot("c")
    assert [s.name for s in ro.list_snapshots("c")] == [desc.name]
    r = httpx.get(f"{server.url}/collections/c/snapshots/{desc.name}", headers={"api-key": "r"})
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == desc.checksum
    # URL recovery from an API-key-protected server forwards `api_key` as the `api-key` header.
    url = f"{server.url}/collections/c/snapshots/{desc.name}"
    assert full.recover_snapshot("c_copy", location=url, api_key="k") is True
    assert full.count("c_copy").count == 10
    with pytest.raises(UnexpectedResponse) as e:
        full.recover_snapshot("c_copy2", location=url)  # no key: the download gets a 401
    assert e.value.status_code == 400 and "401" in e.value.structured()["status"]["error"]
    for call in (lambda: ro.create_snapshot("c"), lambda: ro.delete_snapshot("c", desc.name),
                 lambda: ro.recover_snapshot("c", location=f"{server.url}/collections/c/snapshots/{desc.name}"),
                 lambda: ro.create_full_snapshot()):
        with pytest.raises(UnexpectedResponse) as e:
            call()
        assert e.value.status_code == 403
