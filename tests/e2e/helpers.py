"""Shared test data and brute-force reference computations."""
import math
import random
import time
import uuid

import pytest
from qdrant_client import QdrantClient, models

DIM = 768


def vectors(n, dim=DIM, seed=7):
    rnd = random.Random(seed)
    return [[rnd.uniform(-1, 1) for _ in range(dim)] for _ in range(n)]


def payloads(n):
    return [{"title": f"Paper {i}", "DOI": f"10.1000/{uuid.UUID(int=i)}", "year": 2000 + i % 25} for i in range(n)]


def fill(client: QdrantClient, name, n=1000, dim=DIM, seed=7):
    """Recreates `name` as a Cosine collection and upserts n points in one Batch."""
    if client.collection_exists(name):
        client.delete_collection(name)
    client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
    vecs = vectors(n, dim, seed)
    pays = payloads(n)
    for start in range(0, n, 1000):  # one Batch per 1000 points keeps bodies under 32 MiB
        end = min(n, start + 1000)
        client.upsert(name, models.Batch(ids=list(range(start, end)), vectors=vecs[start:end],
                                         payloads=pays[start:end]), wait=True)
    return vecs


def cosine_top(vecs, query, k):
    def norm(v):
        s = math.sqrt(sum(x * x for x in v))
        return [x / s for x in v]

    q = norm(query)
    scored = [(sum(a * b for a, b in zip(norm(v), q)), i) for i, v in enumerate(vecs)]
    scored.sort(key=lambda t: (-t[0], t[1]))
    return scored[:k]


def all_points(client, name):
    out, offset = [], None
    while True:
        page, offset = client.scroll(name, limit=128, offset=offset, with_payload=True, with_vectors=True)
        out.extend(page)
        if offset is None:
            return out


def assert_same_points(client, a, b):
    pa, pb = all_points(client, a), all_points(client, b)
    assert [p.id for p in pa] == [p.id for p in pb]
    assert [p.payload for p in pa] == [p.payload for p in pb]
    assert [p.vector for p in pa] == [p.vector for p in pb]


def top_ids(client, name, query, k=10):
    return [(p.id, round(p.score, 5)) for p in client.query_points(name, query=query, limit=k).points]


def wait_for(pred, timeout, what):
    """Until `pred()` holds; fails naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.5)
    pytest.fail(f"not within {timeout} s: {what}")
