"""Issue 8 end to end: the snapshot tutorial over gRPC with the official Python client
(prefer_grpc=True), compared point for point with what the REST client sees."""
import struct

import grpc
import pytest
from qdrant_client import QdrantClient, models

from helpers import all_points, fill, vectors

KEY = "grpc-test-key"


def f32(v):
    """A vector as float32 values: REST prints shortest decimals, gRPC carries the bits."""
    return [struct.unpack("f", struct.pack("f", x))[0] for x in v]


def grpc_client(server, **kw):
    return QdrantClient(host="127.0.0.1", port=server.port, grpc_port=server.grpc_port,
                        prefer_grpc=True, https=False, timeout=120, **kw)


@pytest.fixture
def keyed_server(make_server):
    return make_server(env={"QDRANT__SERVICE__API_KEY": KEY})


def test_snapshot_tutorial_over_grpc(keyed_server):
    server = keyed_server
    g = grpc_client(server, api_key=KEY)
    rest = QdrantClient(url=server.url, api_key=KEY, timeout=120)
    assert g.info().version == rest.info().version
    vecs = fill(g, "papers", n=1000)
    assert g.count("papers").count == 1000

    # Queries: the top 10 over gRPC equal REST's, ids and scores.
    for q in (vecs[5], vectors(1, seed=11)[0]):
        hg = g.query_points("papers", query=q, limit=10, with_payload=True).points
        hr = rest.query_points("papers", query=q, limit=10, with_payload=True).points
        assert [p.id for p in hg] == [p.id for p in hr]
        assert [round(p.score, 5) for p in hg] == [round(p.score, 5) for p in hr]
        assert [p.payload for p in hg] == [p.payload for p in hr]

    desc = g.create_snapshot("papers")
    assert desc.name.startswith("papers-") and len(desc.checksum) == 64
    assert [s.name for s in g.list_snapshots("papers")] == [desc.name]
    # Recovery is REST-only, as in Qdrant: from the gRPC-made snapshot.
    url = f"{server.url}/collections/papers/snapshots/{desc.name}"
    assert rest.recover_snapshot("copy", location=url, api_key=KEY, checksum=desc.checksum) is True

    # Every point of the copy, read over gRPC, equals the original read over REST.
    pg, pr = all_points(g, "copy"), all_points(rest, "papers")
    assert [p.id for p in pg] == [p.id for p in pr]
    assert [p.payload for p in pg] == [p.payload for p in pr]
    assert [f32(p.vector) for p in pg] == [f32(p.vector) for p in pr]

    assert g.delete_snapshot("papers", desc.name) is True
    assert g.list_snapshots("papers") == []
    full = g.create_full_snapshot()
    assert [s.name for s in g.list_full_snapshots()] == [full.name]
    assert g.delete_full_snapshot(full.name) is True


def test_grpc_errors_and_keys(keyed_server):
    server = keyed_server
    with pytest.raises(grpc.RpcError) as e:
        grpc_client(server).get_collections()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    g = grpc_client(server, api_key=KEY)
    with pytest.raises(grpc.RpcError) as e:
        g.get_collection("missing")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    g.create_collection("c", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    with pytest.raises(grpc.RpcError) as e:
        g.upsert("c", [models.PointStruct(id=1, vector=[1.0], payload={})])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Payload updates, UUID ids and named selectors round-trip.
    uid = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
    g.upsert("c", [models.PointStruct(id=uid, vector=[1, 2, 3, 4], payload={"a": 1, "b": {"c": [1, "x"]}})])
    g.set_payload("c", payload={"d": True}, points=[uid])
    g.delete_payload("c", keys=["a"], points=[uid])
    [p] = g.retrieve("c", [uid], with_payload=models.PayloadSelectorInclude(include=["b", "d"]))
    assert p.id == uid and p.payload == {"b": {"c": [1, "x"]}, "d": True}
