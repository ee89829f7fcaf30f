"""Issue 10 end to end: snapshots written by real Qdrant 1.19.0 (tests/fixtures/qdrant-1.19)
recover through every path a user has, driven by the official client, and equal what Qdrant
itself reported for them: every point, payload and vector, and the top-10 of fixed queries."""
import gzip
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from helpers import all_points

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qdrant-1.19"


def expected(name):
    with gzip.open(FIXTURES / f"{name}.expected.json.gz", "rt") as f:
        return json.load(f)


def close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(abs(x - y) < 1e-5 for x, y in zip(a, b))


def assert_same_as_qdrant(client, collection, fixture):
    exp = expected(fixture)
    info = client.get_collection(collection)
    assert info.points_count == exp["points_count"]
    got = {p.id: p for p in all_points(client, collection)}
    assert len(got) == len(exp["points"])
    for w in exp["points"]:
        g = got[w["id"]]
        assert g.payload == w["payload"], w["id"]
        assert close(w["vector"], g.vector), w["id"]
    for q in exp["queries"]:
        hits = client.query_points(collection, query=q["query"], using=q["using"], limit=10).points
        assert [h.id for h in hits] == q["ids"]
        for h, s in zip(hits, q["scores"]):
            assert abs(h.score - s) <= 1e-4 * max(abs(s), 1.0)


@pytest.fixture
def file_server():
    """A plain HTTP server holding the fixtures, as a user's file server would."""
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(FIXTURES), **k)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_qdrant_snapshots_recover_by_upload_url_file_and_bare_name(server, tmp_path, file_server):
    client = QdrantClient(url=server.url, timeout=120)
    for name in ("papers", "named"):
        snapshot = FIXTURES / f"{name}.snapshot"
        with open(snapshot, "rb") as f:
            res = client.http.snapshots_api.recover_from_uploaded_snapshot(
                collection_name=f"{name}_upload", wait=True, priority=models.SnapshotPriority.SNAPSHOT,
                snapshot=f)
        assert res.result is True
        assert_same_as_qdrant(client, f"{name}_upload", name)

        assert client.recover_snapshot(f"{name}_url", location=f"{file_server}/{name}.snapshot") is True
        assert_same_as_qdrant(client, f"{name}_url", name)

        snapshots = tmp_path / "snapshots"
        (snapshots / f"{name}_bare").mkdir(parents=True)
        shutil.copy(snapshot, snapshots / f"{name}_bare" / "from-qdrant.snapshot")
        assert client.recover_snapshot(f"{name}_bare", location="from-qdrant.snapshot") is True
        assert_same_as_qdrant(client, f"{name}_bare", name)

        shutil.copy(snapshot, snapshots / f"qdrant-{name}.snapshot")
        location = (snapshots / f"qdrant-{name}.snapshot").as_uri()
        assert client.recover_snapshot(f"{name}_file", location=location) is True
        assert_same_as_qdrant(client, f"{name}_file", name)

    # A recovered collection is an ordinary one: it takes writes and snapshots.
    client.upsert("papers_url", points=[models.PointStruct(id=424242, vector=[0.1] * 768, payload={"x": 1})])
    assert client.count("papers_url").count == expected("papers")["points_count"] + 1
    assert client.create_snapshot("papers_url").size > 0


def test_a_broken_qdrant_snapshot_is_a_400_that_creates_nothing(server, tmp_path):
    client = QdrantClient(url=server.url, timeout=120)
    data = (FIXTURES / "papers.snapshot").read_bytes()
    broken = tmp_path / "broken.snapshot"
    broken.write_bytes(data[: len(data) // 3])
    with open(broken, "rb") as f, pytest.raises(UnexpectedResponse) as e:
        client.http.snapshots_api.recover_from_uploaded_snapshot(collection_name="broken", wait=True, snapshot=f)
    assert e.value.status_code == 400
    assert "Qdrant snapshot" in e.value.content.decode()
    assert not client.collection_exists("broken")


def test_qdrant_snapshots_recover_at_start_up(make_server, tmp_path):
    a = make_server(root=tmp_path / "a", args=["--snapshot", f"{FIXTURES / 'papers.snapshot'}:papers"])
    assert_same_as_qdrant(QdrantClient(url=a.url, timeout=120), "papers", "papers")

    b = make_server(root=tmp_path / "b", args=["--storage-snapshot", str(FIXTURES / "full.snapshot")])
    client = QdrantClient(url=b.url, timeout=120)
    full = json.loads((FIXTURES / "full.expected.json").read_text())
    assert sorted(c.name for c in client.get_collections().collections) == sorted(full["collections"])
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == full["aliases"]
    for name in full["collections"]:
        assert_same_as_qdrant(client, name, name)
