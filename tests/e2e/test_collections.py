"""Issue 2 end to end: the official Python client against the real binary."""
import time
import warnings

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from helpers import DIM, all_points, cosine_top, payloads, vectors


def check_everything(client, vecs):
    n = len(vecs)
    got = client.retrieve("papers", ids=[0, 17, 999], with_payload=True, with_vectors=False)
    assert [p.id for p in got] == [0, 17, 999]
    assert got[1].payload == payloads(n)[17]
    points = all_points(client, "papers")
    assert [p.id for p in points] == list(range(n))
    assert all(p.payload == payloads(n)[p.id] for p in points)
    assert client.count("papers", exact=True).count == n
    flt = models.Filter(must=[models.FieldCondition(key="year", match=models.MatchValue(value=2003))])
    assert client.count("papers", count_filter=flt, exact=True).count == sum(1 for i in range(n) if i % 25 == 3)
    for q in (vecs[5], vectors(1, seed=99)[0]):
        want = cosine_top(vecs, q, 10)
        got = client.query_points("papers", query=q, limit=10, with_payload=True).points
        assert [p.id for p in got] == [i for _, i in want]
        for p, (score, _) in zip(got, want):
            assert abs(p.score - score) < 1e-4
        assert got[0].payload == payloads(n)[got[0].id]


def test_tutorial_survives_restart(server):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = QdrantClient(url=server.url, timeout=60)
        info = client.info()
        time.sleep(1.0)  # qdrant-client >= 1.17 probes the version in a background thread
    assert [str(w.message) for w in caught if "version" in str(w.message)] == []
    assert info.title == "qdrant - vector search engine"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client.recreate_collection("papers", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    vecs = vectors(1000)
    res = client.upsert("papers", models.Batch(ids=list(range(1000)), vectors=vecs, payloads=payloads(1000)), wait=True)
    assert res.status == models.UpdateStatus.COMPLETED
    col = client.get_collection("papers")
    assert col.points_count == 1000
    assert col.config.params.vectors.size == DIM
    check_everything(client, vecs)
    server.restart()
    check_everything(QdrantClient(url=server.url, timeout=60), vecs)


def test_acknowledged_writes_survive_kill_9(server):
    client = QdrantClient(url=server.url, timeout=60)
    client.create_collection("c", vectors_config=models.VectorParams(size=8, distance=models.Distance.DOT))
    vecs = vectors(500, dim=8)
    for start in range(0, 500, 50):
        client.upsert("c", models.Batch(ids=list(range(start, start + 50)), vectors=vecs[start:start + 50]), wait=True)
    client.delete("c", points_selector=models.PointIdsList(points=[3, 4]), wait=True)
    server.kill9()
    server.start()
    client = QdrantClient(url=server.url, timeout=60)
    assert client.count("c", exact=True).count == 498
    assert client.retrieve("c", ids=[3, 4]) == []
    assert client.retrieve("c", ids=[499], with_vectors=True)[0].vector == pytest.approx(vecs[499])


def test_errors_are_4xx_in_qdrants_envelope(server):
    client = QdrantClient(url=server.url, timeout=60)
    client.create_collection("c", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    with pytest.raises(UnexpectedResponse) as e:
        client.upsert("c", [models.PointStruct(id=1, vector=[1.0, 2.0])])
    assert e.value.status_code == 400
    assert "Vector dimension error" in e.value.structured()["status"]["error"]
    with pytest.raises(UnexpectedResponse) as e:
        client.get_collection("missing")
    assert e.value.status_code == 404
    assert client.delete_collection("missing") is False
    assert client.count("c").count == 0


def test_api_keys(make_server):
    server = make_server(env={"QDRANT__SERVICE__API_KEY": "full-key", "QDRANT__SERVICE__READ_ONLY_API_KEY": "ro-key"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Api key is used with an insecure connection"
        full = QdrantClient(url=server.url, api_key="full-key", timeout=60)
        ro = QdrantClient(url=server.url, api_key="ro-key", timeout=60)
        anon = QdrantClient(url=server.url, timeout=60)
    full.create_collection("c", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    assert ro.collection_exists("c")
    with pytest.raises(UnexpectedResponse) as e:
        ro.upsert("c", [models.PointStruct(id=1, vector=[1.0, 2.0])])
    assert e.value.status_code == 403
    with pytest.raises(UnexpectedResponse) as e:
        anon.get_collections()
    assert e.value.status_code == 401


def test_bad_configuration_stops_start_up_with_key_and_origin(make_server, tmp_path):
    bad = make_server(env={"QDRANT__SERVICE__HTTP_PORT": "not-a-port"}, start=False)
    code, out = bad.run_once([], timeout=60)
    assert code != 0
    assert "service.http_port" in out and "QDRANT__SERVICE__HTTP_PORT" in out and "panicked" not in out
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("storage:\n  snapshots_config:\n    snapshots_storage: ftp\n")
    code, out = bad.run_once(["--config-path", str(cfg)], timeout=60)
    assert code != 0 and "snapshots_storage" in out and "bad.yaml" in out
    code, out = bad.run_once(["--config-path", str(tmp_path / "missing.yaml")], timeout=60)
    assert code != 0 and "missing.yaml" in out
