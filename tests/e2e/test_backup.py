"""Issue 22 end to end: snapstream backs up a real three-node Qdrant 1.19 cluster (3 shards,
replication 2, a payload index, an alias) into S3, incrementally, and restores each backup into
a fresh single node and a fresh three-node cluster, compared point by point with the official
client against what Qdrant served when each backup was taken."""
import hashlib
import os
import uuid

import httpx
import numpy as np
import pytest
from qdrant_client import models

from qdrant import API_KEY, Deployment, free_ports, qdrant_bin
from test_dashboard import browser  # noqa: F401 (a fixture)
from test_s3 import s3_env

N, DIM = 3000, 16


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    qdrant_bin()
    d = Deployment(tmp_path_factory.mktemp("cluster"))
    yield d
    d.stop()


def all_points(client, name):
    out, offset = {}, None
    while True:
        points, offset = client.scroll(name, limit=1000, offset=offset, with_payload=True, with_vectors=True)
        for p in points:
            out[p.id] = (p.payload, [round(x, 6) for x in p.vector])
        if offset is None:
            return out


def wait_active(client, name):
    """Until every replica of every shard is Active (recoveries re-copy replicas)."""
    import time
    for _ in range(600):
        info = client.http.distributed_api.collection_cluster_info(name).result
        states = [s.state for s in info.local_shards] + [s.state for s in info.remote_shards]
        if states and all(str(s).endswith("Active") or s == "Active" for s in states):
            return
        time.sleep(0.1)
    raise AssertionError(f"replicas of {name} did not become Active")


def random_collection(q, name, n, dim, shard_number, replication_factor, seed):
    """A collection of `n` random vectors, created on the cluster behind `q`."""
    q.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT),
                        shard_number=shard_number, replication_factor=replication_factor)
    rng = np.random.default_rng(seed)
    q.upsert(name, models.Batch(ids=list(range(n)), vectors=rng.random((n, dim), dtype=np.float32).tolist()),
             wait=True)


def s3_client():
    import boto3
    return boto3.client("s3", endpoint_url=os.environ["S3_TEST_ENDPOINT"], region_name=os.environ["S3_TEST_REGION"],
                        aws_access_key_id=os.environ["S3_TEST_ACCESS_KEY"],
                        aws_secret_access_key=os.environ["S3_TEST_SECRET_KEY"])


def source_env(cluster):
    """A server's environment: a fresh prefix of the test bucket, `cluster` as source `prod`."""
    env = s3_env(f"e2e-backup-{uuid.uuid4().hex}")
    env.update({
        "QDRANT__BACKUP__SOURCES__PROD__URL": cluster.url,
        "QDRANT__BACKUP__SOURCES__PROD__API_KEY": API_KEY,
    })
    return env


def source_server(make_server, cluster):
    return make_server(env=source_env(cluster))


def backup(server, **body):
    r = httpx.post(f"{server.url}/backup/sources/prod/backups?wait=true", json=body or None, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def restore(server, backup_id, to, **body):
    r = httpx.post(f"{server.url}/backup/sources/prod/backups/{backup_id}/restore?wait=true",
                   json={"to": to, "api_key": API_KEY, **body}, timeout=600)
    return r


def test_backup_a_cluster_then_restore_into_a_single_node_and_a_new_cluster(make_server, cluster, tmp_path):
    q = cluster.client()
    q.create_collection("papers", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                        shard_number=3, replication_factor=2)
    rng = np.random.default_rng(5)
    q.upsert("papers", models.Batch(ids=list(range(N)), vectors=rng.random((N, DIM), dtype=np.float32).tolist(),
                                    payloads=[{"i": i, "t": f"doc {i}"} for i in range(N)]), wait=True)
    q.create_payload_index("papers", "i", models.PayloadSchemaType.INTEGER, wait=True)
    q.update_collection_aliases(change_aliases_operations=[models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name="papers", alias_name="live"))])
    wait_active(q, "papers")
    served_first = all_points(q, "papers")
    server = source_server(make_server, cluster)

    sources = httpx.get(f"{server.url}/backup/sources").json()["result"]
    assert [s["name"] for s in sources] == ["prod"]
    assert sorted(p["url"] for p in sources[0]["peers"]) == sorted(p.url for p in cluster.peers)
    assert all(p["reachable"] for p in sources[0]["peers"])
    # The contract's shapes.
    assert {"name", "url", "peers", "collections", "last_backup", "next_backup_at"} <= set(sources[0])
    assert all({"peer_id", "url", "reachable"} <= set(p) for p in sources[0]["peers"])
    assert sources[0]["last_backup"] is None and sources[0]["next_backup_at"] is None

    first = backup(server)
    col = first["collections"]["papers"]
    assert {"id", "source", "started_at", "finished_at", "size", "stored_bytes", "collections"} <= set(first)
    assert {"config", "aliases", "payload_indexes", "points_count", "shards"} <= set(col)
    assert all({"shard_id", "peer_id", "points_count", "size", "sha256", "pulled_bytes", "stored_bytes"} <= set(s)
               for s in col["shards"])
    last = httpx.get(f"{server.url}/backup/sources").json()["result"][0]["last_backup"]
    assert last == {"id": first["id"], "finished_at": first["finished_at"]}, (last, first["finished_at"])
    assert col["points_count"] == N and col["aliases"] == ["live"]
    assert col["payload_indexes"]["i"]["data_type"] == "integer"
    assert col["config"]["params"]["shard_number"] == 3 and col["config"]["params"]["replication_factor"] == 2
    assert sorted(s["shard_id"] for s in col["shards"]) == [0, 1, 2]
    # Shards come from more than one peer: pulled in parallel.
    assert len({s["peer_id"] for s in col["shards"]}) > 1
    assert first["size"] == sum(s["size"] for s in col["shards"]) > 0

    # 1% of the points changed and a few deleted; the second backup adds little.
    changed = list(range(0, N, 100))
    q.upsert("papers", models.Batch(ids=changed, vectors=rng.random((len(changed), DIM), dtype=np.float32).tolist(),
                                    payloads=[{"i": i, "t": "changed"} for i in changed]), wait=True)
    q.delete("papers", points_selector=models.PointIdsList(points=[1, 2, 3]), wait=True)
    served_second = all_points(q, "papers")
    second = backup(server)
    assert second["collections"]["papers"]["points_count"] == N - 3
    assert second["stored_bytes"] < first["stored_bytes"], (first, second)
    listed = httpx.get(f"{server.url}/backup/sources/prod/backups").json()["result"]
    assert [b["id"] for b in listed] == [second["id"], first["id"]]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'snapstream_backups_total{source="prod",outcome="ok"} 2' in metrics
    pulled = sum(s["pulled_bytes"] for b in (first, second) for s in b["collections"]["papers"]["shards"])
    assert f'snapstream_backup_pulled_bytes_total{{source="prod"}} {pulled}' in metrics
    assert 'snapstream_backup_last_success_timestamp_seconds{source="prod"}' in metrics

    # Each shard came from the replica pulled last time (as a partial snapshot; with points
    # this few, every segment is appendable and changed, so it held nearly everything).
    first_peers = {s["shard_id"]: s["peer_id"] for s in first["collections"]["papers"]["shards"]}
    assert {s["shard_id"]: s["peer_id"] for s in second["collections"]["papers"]["shards"]} == first_peers

    # Nothing changed since: Qdrant answers 304 for every shard, nothing is pulled or
    # stored, and each archive is the second's.
    third = backup(server)
    by_shard = {s["shard_id"]: s for s in second["collections"]["papers"]["shards"]}
    for s in third["collections"]["papers"]["shards"]:
        assert (s["pulled_bytes"], s["stored_bytes"]) == (0, 0), s
        assert (s["sha256"], s["size"]) == (by_shard[s["shard_id"]]["sha256"], by_shard[s["shard_id"]]["size"])

    # One point changed: only its shard is pulled, and only in part; its archive, rebuilt
    # from the changed files and the third's, downloads with the recorded SHA-256.
    q.upsert("papers", models.Batch(ids=[7], vectors=rng.random((1, DIM), dtype=np.float32).tolist(),
                                    payloads=[{"i": 7, "t": "changed again"}]), wait=True)
    fourth = backup(server)
    pulled = [s for s in fourth["collections"]["papers"]["shards"] if s["pulled_bytes"] > 0]
    assert len(pulled) == 1 and pulled[0]["pulled_bytes"] < pulled[0]["size"], fourth
    one = pulled[0]
    r = httpx.get(f"{server.url}/backup/sources/prod/backups/{fourth['id']}/collections/papers/"
                  f"shards/{one['shard_id']}/snapshot", timeout=120)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == one["sha256"]
    for extra in (third, fourth):
        assert httpx.delete(f"{server.url}/backup/sources/prod/backups/{extra['id']}").json()["result"] is True

    # A shard archive downloads whole and by range, with the recorded SHA-256.
    shard = second["collections"]["papers"]["shards"][0]
    url = (f"{server.url}/backup/sources/prod/backups/{second['id']}/collections/papers/"
           f"shards/{shard['shard_id']}/snapshot")
    r = httpx.get(url, timeout=120)
    assert r.status_code == 200 and int(r.headers["content-length"]) == shard["size"]
    assert hashlib.sha256(r.content).hexdigest() == shard["sha256"] == r.headers["x-checksum-sha256"]
    part = httpx.get(url, headers={"range": "bytes=100-1099"}, timeout=60)
    assert part.status_code == 206 and part.content == r.content[100:1100]

    # Qdrant itself recovers each shard from that endpoint by URL, with the checksum (the
    # tutorial's way, with snapstream as the file server).
    by_url = Deployment(tmp_path / "by-url", cluster=False)
    try:
        q1 = by_url.client()
        q1.create_collection("papers", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                             shard_number=3)
        for sh in second["collections"]["papers"]["shards"]:
            location = (f"{server.url}/backup/sources/prod/backups/{second['id']}/collections/papers/"
                        f"shards/{sh['shard_id']}/snapshot")
            r = httpx.put(f"{by_url.url}/collections/papers/shards/{sh['shard_id']}/snapshots/recover?wait=true",
                          json={"location": location, "checksum": sh["sha256"]},
                          headers={"api-key": API_KEY}, timeout=120)
            assert r.status_code == 200, r.text
        assert all_points(q1, "papers") == served_second
    finally:
        by_url.stop()

    # The first backup into a fresh single node, renamed.
    single = Deployment(tmp_path / "single", cluster=False)
    try:
        r = restore(server, first["id"], single.url, rename={"papers": "papers_v1"})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["verified"], result
        s = single.client()
        assert all_points(s, "papers_v1") == served_first
        assert s.get_collection_aliases("papers_v1").aliases[0].alias_name == "live"
        assert "i" in s.get_collection("papers_v1").payload_schema
        # Again without overwrite: 409, nothing changed.
        again = restore(server, first["id"], single.url, rename={"papers": "papers_v1"})
        assert again.status_code == 409, again.text
        assert s.count("papers_v1").count == N
    finally:
        single.stop()

    # The second backup into a fresh three-node cluster.
    other = Deployment(tmp_path / "other")
    try:
        r = restore(server, second["id"], other.url)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["verified"], r.text
        o = other.client()
        wait_active(o, "papers")
        assert all_points(o, "papers") == served_second
        assert o.count("papers", exact=True).count == N - 3
        assert other.snapshot_files() == []
    finally:
        other.stop()
    # Every peer pulled its shards from snapstream by URL; none needed an upload.
    assert "did not pull the shard archive" not in server.log.read_text()

    # Nothing was left on the source's nodes.
    assert cluster.snapshot_files() == []

    # Deleting the first backup keeps the second whole.
    assert httpx.delete(f"{server.url}/backup/sources/prod/backups/{first['id']}").json()["result"] is True
    r = httpx.get(url, timeout=120)
    assert hashlib.sha256(r.content).hexdigest() == shard["sha256"]
    assert httpx.get(f"{server.url}/backup/sources/prod/backups/{first['id']}").status_code == 404


def test_unknown_sources_and_backups_are_404_and_a_bad_body_is_400(make_server, cluster):
    server = source_server(make_server, cluster)
    assert httpx.post(f"{server.url}/backup/sources/nope/backups").status_code == 404
    assert httpx.get(f"{server.url}/backup/sources/prod/backups/20200101T000000Z-abcdef").status_code == 404
    assert httpx.get(f"{server.url}/backup/sources/prod/backups/..%2F..%2Fx").status_code == 404
    r = httpx.post(f"{server.url}/backup/sources/prod/backups", content=b"{not json")
    assert r.status_code == 400 and "status" in r.json()
    r = restore(server, "20200101T000000Z-abcdef", "not a url")
    assert r.status_code == 400, r.text
    # New names are checked by Qdrant's rules before anything is read.
    r = restore(server, "20200101T000000Z-abcdef", cluster.url, rename={"a": "b/c"})
    assert r.status_code == 400 and "rename" in r.text, r.text
    # A collection the source does not have: 404, nothing backed up.
    r = httpx.post(f"{server.url}/backup/sources/prod/backups?wait=true", json={"collections": ["nope"]}, timeout=60)
    assert r.status_code == 404 and "`nope`" in r.text, r.text
    assert httpx.get(f"{server.url}/backup/sources/prod/backups").json()["result"] == []
    # A key Qdrant refuses is named.
    env = source_env(cluster)
    env["QDRANT__BACKUP__SOURCES__PROD__API_KEY"] = "wrong"
    wrong = make_server(env=env)
    r = httpx.post(f"{wrong.url}/backup/sources/prod/backups?wait=true", timeout=60)
    assert r.status_code == 502 and "api_key of source `prod`" in r.text, r.text


def test_cli_restore_with_the_server_stopped(make_server, cluster, tmp_path):
    q = cluster.client()
    q.create_collection("notes", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                          shard_number=2, replication_factor=2)
    q.upsert("notes", [models.PointStruct(id=i, vector=[i, 1, 2, 3], payload={"n": i}) for i in range(50)],
             wait=True)
    wait_active(q, "notes")
    served = all_points(q, "notes")
    server = source_server(make_server, cluster)
    done = backup(server, collections=["notes"])
    assert list(done["collections"]) == ["notes"]
    server.stop()
    single = Deployment(tmp_path / "cli-target", cluster=False)
    try:
        code, out = server.run_once(["backup", "list", "--source", "prod"])
        assert code == 0 and done["id"] in out, out
        code, out = server.run_once(["backup", "restore", "--source", "prod", "--id", done["id"], "--to", single.url,
                                     "--api-key", API_KEY, "--rename", "notes=notes_cli"])
        assert code == 0, out
        assert '"verified": true' in out, out
        assert all_points(single.client(), "notes_cli") == served
        code, out = server.run_once(["backup", "restore", "--source", "prod", "--id", "nope", "--to", single.url])
        assert code != 0 and "not found" in out, out
    finally:
        single.stop()


def test_scheduled_backups_keep_what_retention_says(make_server, cluster):
    """Every second a backup runs by itself; after each, keep_last 2 removes the older ones:
    the listing grows to at most 3 (between a commit and its retention) and comes back to 2."""
    import re
    import time
    q = cluster.client()
    q.create_collection("ticks", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                        shard_number=1)
    q.upsert("ticks", [models.PointStruct(id=i, vector=[i, 1, 2, 3]) for i in range(20)], wait=True)
    env = source_env(cluster)
    env.update({
        "QDRANT__BACKUP__SOURCES__PROD__COLLECTIONS": "ticks",
        "QDRANT__BACKUP__SOURCES__PROD__SCHEDULE__INTERVAL_SEC": "1",
        "QDRANT__BACKUP__SOURCES__PROD__RETENTION__KEEP_LAST": "2",
    })
    server = make_server(env=env)
    ok, listed, most = 0, [], 0
    deadline = time.time() + 120
    while time.time() < deadline:
        m = re.search(r'snapstream_backups_total\{source="prod",outcome="ok"\} (\d+)',
                      httpx.get(f"{server.url}/metrics").text)
        ok = int(m.group(1)) if m else 0
        listed = httpx.get(f"{server.url}/backup/sources/prod/backups").json()["result"]
        most = max(most, len(listed))
        if ok >= 4 and len(listed) == 2:
            break
        time.sleep(0.1)
    assert ok >= 4 and len(listed) == 2, (ok, listed)
    assert most <= 3, most
    assert all(list(b["collections"]) == ["ticks"] for b in listed)
    source = httpx.get(f"{server.url}/backup/sources").json()["result"][0]
    assert source["next_backup_at"] is not None
    assert source["last_backup"]["id"] in {b["id"] for b in listed}


def test_a_stopped_peer_and_a_shard_without_replica(make_server, cluster):
    q = cluster.client()
    q.create_collection("kept", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                          shard_number=3, replication_factor=2)
    q.create_collection("single_copy", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                          shard_number=3, replication_factor=1)
    for name in ("kept", "single_copy"):
        q.upsert(name, [models.PointStruct(id=i, vector=[i, 1, 2, 3]) for i in range(300)], wait=True)
    wait_active(q, "kept")
    served = all_points(q, "kept")
    server = source_server(make_server, cluster)
    stopped = cluster.peers[2]
    stopped_id = httpx.get(f"{stopped.url}/cluster", headers={"api-key": API_KEY}).json()["result"]["peer_id"]
    stopped.stop()
    try:
        sources = httpx.get(f"{server.url}/backup/sources").json()["result"][0]
        assert {p["url"]: p["reachable"] for p in sources["peers"]}[stopped.url] is False
        r = backup(server, collections=["kept", "single_copy"])
        kept = r["collections"]["kept"]
        # Every shard of the replicated collection came from a peer that answered.
        assert sorted(s["shard_id"] for s in kept["shards"]) == [0, 1, 2]
        assert stopped_id not in {s["peer_id"] for s in kept["shards"]}
        assert kept["points_count"] == 300
        # The collection with a shard only on the stopped peer is named, with why.
        assert "single_copy" not in r["collections"]
        assert "single_copy" in r["failed"], r
    finally:
        stopped.start()
        cluster.peers[0].wait(lambda p: len(p.get("/cluster").json()["result"]["peers"]) == 3)
    shard = kept["shards"][0]
    url = (f"{server.url}/backup/sources/prod/backups/{r['id']}/collections/kept/shards/"
           f"{shard['shard_id']}/snapshot")
    assert hashlib.sha256(httpx.get(url, timeout=60).content).hexdigest() == shard["sha256"]
    assert len(served) == 300


def test_a_damaged_pack_is_caught_and_written_again_by_the_next_backup(make_server, cluster):
    """A byte flipped in a pack of a backup ends a download of the shard and is named by a
    verification; the next backup, although nothing changed in Qdrant, does not keep the
    damaged files as stored: it pulls the shard whole and writes the pack again, so the first
    backup is whole again."""
    import json

    random_collection(cluster.client(), "packed", 10000, 64, shard_number=1, replication_factor=1, seed=11)
    prefix = f"e2e-backup-damage-{uuid.uuid4().hex}"
    env = s3_env(prefix)
    env.update({
        "QDRANT__BACKUP__SOURCES__PROD__URL": cluster.url,
        "QDRANT__BACKUP__SOURCES__PROD__API_KEY": API_KEY,
    })
    server = make_server(env=env)
    first = backup(server, collections=["packed"])
    shard = first["collections"]["packed"]["shards"][0]

    s3 = s3_client()
    bucket = os.environ["S3_TEST_BUCKET"]
    stored = s3.get_object(Bucket=bucket, Key=f"{prefix}/.backups/prod/{first['id']}.backup")["Body"].read()
    manifest = json.loads(stored)["shards"][f"packed/{shard['shard_id']}"]
    packs = [p for e in manifest["entries"] if e.get("tables") for p in e["pieces"]]
    assert packs, "the shard's files are stored in packs"

    def key(p):
        return f"{prefix}/.repository/pieces/{p}"

    pack = max(packs, key=lambda p: s3.head_object(Bucket=bucket, Key=key(p))["ContentLength"])
    data = bytearray(s3.get_object(Bucket=bucket, Key=key(pack))["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key(pack), Body=bytes(data))

    url = (f"{server.url}/backup/sources/prod/backups/{first['id']}/collections/packed/shards/"
           f"{shard['shard_id']}/snapshot")
    try:
        r = httpx.get(url, timeout=120)
        assert r.status_code >= 400, f"served {r.status_code}"
    except httpx.HTTPError:
        pass  # a broken transfer: never the wrong bytes

    def damaged():
        r = httpx.post(f"{server.url}/repository/verify?wait=true", json={"read_data": 1}, timeout=300)
        assert r.status_code == 200, r.text
        return {(d["snapshot"], d["piece"]) for d in r.json()["result"]["damaged"]}

    assert damaged() == {(f"backup prod/{first['id']}", pack)}
    second = backup(server, collections=["packed"])
    again = second["collections"]["packed"]["shards"][0]
    assert again["pulled_bytes"] == again["size"], "pulled whole"
    assert damaged() == set()
    assert hashlib.sha256(httpx.get(url, timeout=120).content).hexdigest() == shard["sha256"]


def test_kill9_mid_backup_leaves_nothing_listed_and_its_pieces_are_collected(make_server, cluster, tmp_path):
    import time
    from urllib.parse import urlsplit

    from gate import Gate

    q = cluster.client()
    random_collection(q, "big", 20000, 64, shard_number=3, replication_factor=2, seed=3)
    wait_active(q, "big")
    endpoint = urlsplit(os.environ["S3_TEST_ENDPOINT"])
    steps = [(i + 1) << 19 for i in range(8)]
    gate = Gate(endpoint.hostname, endpoint.port or 80, steps)
    prefix = f"e2e-backup-kill-{uuid.uuid4().hex}"
    env = s3_env(prefix)
    env.update({
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL": f"http://127.0.0.1:{gate.port}",
        "QDRANT__BACKUP__SOURCES__PROD__URL": cluster.url,
        "QDRANT__BACKUP__SOURCES__PROD__API_KEY": API_KEY,
    })
    server = make_server(env=env)
    s3 = s3_client()

    def keys():
        out = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ["S3_TEST_BUCKET"],
                                                                 Prefix=prefix + "/"):
            out += [o["Key"][len(prefix) + 1:] for o in page.get("Contents", [])]
        return out

    try:
        r = httpx.post(f"{server.url}/backup/sources/prod/backups?wait=false", timeout=30)
        assert r.status_code == 202, r.text
        assert r.json()["result"]["operation_id"] == int(r.headers["x-operation-id"]), r.text
        # Held at the gate with pieces stored and no record yet: killed. Uploads run in
        # parallel, so a threshold may fall while every piece is still in flight: the gate
        # lets half a MiB more through until one piece has landed.
        for i in range(len(steps)):
            assert gate.reached[i].wait(120)
            landed = time.time() + 2
            while time.time() < landed and not any(k.startswith(".repository/pieces/") for k in keys()):
                time.sleep(0.2)
            if any(k.startswith(".repository/pieces/") for k in keys()):
                break
            gate.open(i)
        server.kill9()
        gate.open_all()
        assert any(k.startswith(".repository/pieces/") for k in keys())
        server.start()
        assert httpx.get(f"{server.url}/backup/sources/prod/backups").json()["result"] == []
        # The dead process's lease expires; then the collector removes its pieces.
        deadline = time.time() + 120
        while any(k.startswith(".repository/pieces/") for k in keys()) and time.time() < deadline:
            time.sleep(1)
        assert not any(k.startswith(".repository/pieces/") for k in keys()), keys()
        # And a backup run now completes.
        done = backup(server, collections=["big"])
        assert done["collections"]["big"]["points_count"] == 20000
    finally:
        gate.close()


def test_kill9_mid_restore_then_the_same_restore_finishes(make_server, cluster, tmp_path):
    from gate import Gate

    q = cluster.client()
    q.create_collection("resumed", vectors_config=models.VectorParams(size=32, distance=models.Distance.DOT),
                        shard_number=3, replication_factor=1)
    rng = np.random.default_rng(9)
    q.upsert("resumed", models.Batch(ids=list(range(6000)), vectors=rng.random((6000, 32), dtype=np.float32).tolist(),
                                     payloads=[{"i": i} for i in range(6000)]), wait=True)
    served = all_points(q, "resumed")
    server = source_server(make_server, cluster)
    done = backup(server, collections=["resumed"])
    single = Deployment(tmp_path / "resume-target", cluster=False)
    peer = single.peers[0]
    # Requests to the target pass a gate that holds the second shard's recovery once the
    # first is through (a single node recovers its shards one after the other).
    gate = Gate(peer.host, peer.http, [2], pattern=b"/snapshots/recover")
    to = f"http://127.0.0.1:{gate.port}"
    try:
        r = httpx.post(f"{server.url}/backup/sources/prod/backups/{done['id']}/restore?wait=false",
                       json={"to": to, "api_key": API_KEY}, timeout=30)
        assert r.status_code == 202, r.text
        assert gate.reached[0].wait(120)
        server.kill9()
        gate.open_all()
        server.start()
        # The collection exists in the target, half restored: the same request finishes it.
        r = restore(server, done["id"], to)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["verified"], r.text
        assert all_points(single.client(), "resumed") == served
        # Finished: a third run is refused as for any existing collection.
        assert restore(server, done["id"], to).status_code == 409
    finally:
        gate.close()
        single.stop()


def test_kill9_while_a_peer_pulls_a_shard_then_the_same_restore_finishes(make_server, cluster, tmp_path):
    from urllib.parse import urlparse

    from gate import Gate

    q = cluster.client()
    random_collection(q, "pulled", 6000, 32, shard_number=2, replication_factor=1, seed=17)
    served = all_points(q, "pulled")
    env = source_env(cluster)
    first = make_server(env=env)
    done = backup(first, collections=["pulled"])
    first.kill9()
    # The restoring server reads the same repository through a gate that holds what the bucket
    # sends once half the shard archives' bytes have come: reads happen only while a peer
    # pulls, so a peer is then mid-download.
    total = sum(s["size"] for s in done["collections"]["pulled"]["shards"])
    bucket = urlparse(os.environ["S3_TEST_ENDPOINT"])
    gate = Gate(bucket.hostname, bucket.port, [total // 2], downstream=True)
    env["QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL"] = f"http://127.0.0.1:{gate.port}"
    server = make_server(env=env)
    single = Deployment(tmp_path / "pulled-target", cluster=False)
    try:
        r = httpx.post(f"{server.url}/backup/sources/prod/backups/{done['id']}/restore?wait=false",
                       json={"to": single.url, "api_key": API_KEY}, timeout=30)
        assert r.status_code == 202, r.text
        assert gate.reached[0].wait(120)
        server.kill9()
        gate.open_all()
        server.start()
        # The peer's download broke off; the same request recovers what is not done.
        r = restore(server, done["id"], single.url)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["verified"], r.text
        assert all_points(single.client(), "pulled") == served
        assert single.peers[0].snapshot_files() == []
        # Nor is the broken-off download left in the peer's work directory.
        work = single.peers[0].root / "storage" / "tmp"
        assert not work.exists() or list(work.iterdir()) == []
    finally:
        gate.close()
        single.stop()


def poll_operation(server, op_id):
    """The operation's status once it is no longer running."""
    import time
    for _ in range(1200):
        op = httpx.get(f"{server.url}/operations/{op_id}", timeout=30).json()["result"]
        if op["state"] != "running":
            return op
        time.sleep(0.1)
    raise AssertionError(f"operation {op_id} still running: {op}")


def test_a_second_restore_into_a_collection_being_restored_is_409(make_server, cluster, tmp_path):
    from gate import Gate

    q = cluster.client()
    random_collection(q, "twice", 4000, 32, shard_number=2, replication_factor=1, seed=11)
    served = all_points(q, "twice")
    server = source_server(make_server, cluster)
    done = backup(server, collections=["twice"])
    single = Deployment(tmp_path / "twice-target", cluster=False)
    peer = single.peers[0]
    # The first restore's shard recoveries are held by the gate until the second restore has
    # been answered.
    gate = Gate(peer.host, peer.http, [1], pattern=b"/snapshots/recover")
    to = f"http://127.0.0.1:{gate.port}"
    try:
        r = httpx.post(f"{server.url}/backup/sources/prod/backups/{done['id']}/restore?wait=false",
                       json={"to": to, "api_key": API_KEY}, timeout=30)
        assert r.status_code == 202, r.text
        op_id = r.json()["result"]["operation_id"]
        assert gate.reached[0].wait(120)
        # With overwrite it would delete the collection under the first; refused, naming it.
        r = restore(server, done["id"], to, overwrite=True)
        assert r.status_code == 409, r.text
        assert "already running" in r.json()["status"]["error"] and "`twice`" in r.text
        gate.open_all()
        first = poll_operation(server, op_id)
        assert first["state"] == "completed" and first["result"]["verified"], first
        assert first["bytes_done"] >= sum(s["size"] for s in done["collections"]["twice"]["shards"]), first
        assert all_points(single.client(), "twice") == served
        # A target key Qdrant refuses is the caller's to fix: 400, naming it.
        r = restore(server, done["id"], to, overwrite=True, api_key="wrong")
        assert r.status_code == 400 and "the target's `api_key`" in r.text, r.text
        # Once the first has ended, the collection is free for the next restore.
        r = restore(server, done["id"], to, overwrite=True)
        assert r.status_code == 200 and r.json()["result"]["verified"], r.text
        assert all_points(single.client(), "twice") == served
    finally:
        gate.close()
        single.stop()


def test_a_target_that_cannot_pull_from_us_gets_the_shards_uploaded(make_server, cluster, tmp_path):
    """Peers that reach no address of ours (here every connection they make goes to a proxy
    that is not there) recover the same shards from uploads, after one warning."""
    q = cluster.client()
    random_collection(q, "pushed", 3000, 32, shard_number=2, replication_factor=1, seed=13)
    served = all_points(q, "pushed")
    server = source_server(make_server, cluster)
    done = backup(server, collections=["pushed"])
    nowhere = f"http://127.0.0.1:{free_ports(1, ['127.0.0.1'])[0]}"
    single = Deployment(tmp_path / "pushed-target", cluster=False,
                        env={"HTTP_PROXY": nowhere, "http_proxy": nowhere})
    try:
        r = restore(server, done["id"], single.url)
        assert r.status_code == 200 and r.json()["result"]["verified"], r.text
        assert all_points(single.client(), "pushed") == served
        assert server.log.read_text().count("did not pull the shard archive") == 1
        assert single.peers[0].snapshot_files() == []
    finally:
        single.stop()


def test_dashboard_lists_backups_and_restores_one(make_server, cluster, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from test_dashboard import wait

    q = cluster.client()
    q.create_collection("shown", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                        shard_number=2, replication_factor=1)
    q.upsert("shown", [models.PointStruct(id=i, vector=[i, 1, 2, 3], payload={"k": i}) for i in range(120)],
             wait=True)
    server = source_server(make_server, cluster)
    d = browser
    d.get(f"{server.url}/dashboard/")
    card = wait(d, lambda d: d.find_element(By.CSS_SELECTOR, 'article[data-source="prod"]'))
    assert "No backups." in card.text and "3 of 3 peers answering" in card.text
    card.find_element(By.CSS_SELECTOR, "button.backup-now").click()
    row = wait(d, lambda d: d.find_element(By.CSS_SELECTOR, 'article[data-source="prod"] tr[data-backup]'), 120)
    listed = httpx.get(f"{server.url}/backup/sources/prod/backups").json()["result"]
    assert row.get_attribute("data-backup") == listed[0]["id"]
    assert "shown" in row.text
    single = Deployment(tmp_path / "dash-target", cluster=False)
    try:
        row.find_element(By.CSS_SELECTOR, "button.restore").click()
        wait(d, EC.visibility_of_element_located((By.ID, "restore-to"))).send_keys(single.url)
        d.find_element(By.ID, "restore-key").send_keys(API_KEY)
        d.find_element(By.ID, "restore-go").click()
        s = single.client()

        def restored(_):
            # While shards are being recovered the collection answers errors.
            try:
                return s.collection_exists("shown") and s.count("shown").count == 120
            except Exception:
                return False

        wait(d, restored, 120)
        assert d.find_element(By.ID, "error").get_attribute("hidden") is not None
    finally:
        single.stop()
