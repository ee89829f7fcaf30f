"""`GET /metrics`, `GET /operations` and the log, checked from outside with the official client,
the Prometheus project's own parser, and the log file."""
import json
import re
import time

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from qdrant_client import QdrantClient, models

from conftest import Server


def scrape(server, key=None):
    r = httpx.get(f"{server.url}/metrics", headers={"api-key": key} if key else {}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def fill(client, name, n=300, dim=8):
    client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
    client.upsert(name, [models.PointStruct(id=i, vector=[float(i % 7 + j) for j in range(dim)], payload={"i": i})
                         for i in range(n)], wait=True)


def test_counters_move_by_exactly_what_happened(server):
    client = QdrantClient(url=server.url, timeout=60)
    fill(client, "papers")
    before = scrape(server)
    started = time.time()

    snap = client.create_snapshot("papers", wait=True)
    bad = httpx.put(f"{server.url}/collections/papers/snapshots/recover",
                    json={"location": "no-such.snapshot"}, timeout=30)
    assert bad.status_code == 404, bad.text
    middle = scrape(server)
    body = httpx.get(f"{server.url}/collections/papers/snapshots/{snap.name}", timeout=60).content
    assert len(body) == snap.size
    after = scrape(server)

    def moved(a, b, name, **labels):
        return value(b, name, **labels) - value(a, name, **labels)

    ops = "snapstream_snapshot_operations_total"
    assert moved(before, middle, ops, operation="create", kind="collection", outcome="ok") == 1
    assert moved(before, middle, ops, operation="recover", kind="collection", outcome="error") == 1
    assert moved(before, middle, ops, operation="recover", kind="collection", outcome="ok") == 0
    hist = "snapstream_snapshot_operation_duration_seconds_count"
    assert moved(before, middle, hist, operation="create", kind="collection", outcome="ok") == 1
    # The create wrote the archive and its checksum sidecar; nothing else touched storage.
    sidecar = (server.root / "snapshots" / "papers" / f"{snap.name}.checksum").stat().st_size
    assert moved(before, middle, "snapstream_storage_written_bytes_total", backend="local") == snap.size + sidecar
    # The download read the archive, and its published checksum for the headers (once when
    # the size is looked up, once when the body is opened).
    read = moved(middle, after, "snapstream_storage_read_bytes_total", backend="local")
    assert read == snap.size + 2 * sidecar, (read, snap.size, sidecar)
    assert moved(middle, after, "snapstream_storage_written_bytes_total", backend="local") == 0
    req = "snapstream_requests_total"
    route = "/collections/{name}/snapshots/{snapshot}"
    assert moved(middle, after, req, transport="rest", route=route, status="200") == 1
    assert moved(before, middle, req, transport="rest", route="/collections/{name}/snapshots/recover",
                 status="404") == 1
    assert value(after, "snapstream_operations_in_flight", operation="create") == 0
    assert value(after, "snapstream_collection_points", collection="papers") == 300
    last = value(after, "snapstream_collection_last_snapshot_timestamp_seconds", collection="papers")
    assert started - 1 <= last <= time.time() + 1

    # gRPC calls count under their RPC and status code.
    grpc = QdrantClient(host="127.0.0.1", port=server.port, grpc_port=server.grpc_port, prefer_grpc=True)
    g0 = scrape(server)
    assert grpc.count("papers").count == 300
    try:
        grpc.count("nope")
    except Exception:  # noqa: BLE001 - the client raises its own gRPC error type
        pass
    g1 = scrape(server)
    assert moved(g0, g1, req, transport="grpc", route="/qdrant.Points/Count", status="0") == 1
    assert moved(g0, g1, req, transport="grpc", route="/qdrant.Points/Count", status="5") == 1


def test_operations_list_running_and_finished(server):
    client = QdrantClient(url=server.url, timeout=60)
    fill(client, "papers")
    r = httpx.post(f"{server.url}/collections/papers/snapshots?wait=false", timeout=30)
    assert r.status_code == 202
    op_id = int(r.headers["x-operation-id"])
    client.create_snapshot("papers", wait=True)  # waited creates are listed too
    deadline = time.time() + 30
    while time.time() < deadline:
        ops = httpx.get(f"{server.url}/operations", timeout=10).json()["result"]
        if all(o["state"] != "running" for o in ops):
            break
        time.sleep(0.1)
    mine = [o for o in ops if o["id"] == op_id]
    assert len(mine) == 1 and len(ops) == 2
    for o in ops:
        assert o["kind"] == "create_snapshot" and o["collection"] == "papers"
        assert o["state"] == "completed" and o["finished_at"] and o["started_at"]
        assert 0 < o["bytes_done"] and o["bytes_total"] >= o["bytes_done"] * 0.5
        assert o["rate"] > 0
    single = httpx.get(f"{server.url}/operations/{op_id}", timeout=10).json()["result"]
    assert single["id"] == op_id and single["state"] == "completed"


def test_metrics_need_a_key_and_the_read_only_key_is_enough(make_server):
    server = make_server(env={"QDRANT__SERVICE__API_KEY": "full-key-123",
                              "QDRANT__SERVICE__READ_ONLY_API_KEY": "ro-key-456"})
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"api-key": "wrong"}, timeout=10).status_code == 401
    samples = scrape(server, key="ro-key-456")
    assert ("snapstream_s3_part_retries_total", ()) in samples


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_json_log_without_colour_or_secrets(make_server, tmp_path):
    secrets = ["full-key-S3cr3t-abc", "ro-key-S3cr3t-def", "s3-secret-key-S3cr3t-ghi"]
    server = make_server(env={
        "QDRANT__LOGGER__FORMAT": "json",
        "QDRANT__LOG_LEVEL": "DEBUG",
        "QDRANT__SERVICE__API_KEY": secrets[0],
        "QDRANT__SERVICE__READ_ONLY_API_KEY": secrets[1],
        # An S3 storage that cannot be reached: the start-up check fails and is logged, with
        # its cause at debug level, which must not carry the credentials.
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE": "s3",
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUCKET": "no-such-bucket",
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL": "http://127.0.0.1:9",
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ACCESS_KEY": "AKIDEXAMPLE",
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__SECRET_KEY": secrets[2],
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__MAX_RETRIES": "0",
        "RUST_LOG": "",
    })
    h = {"api-key": secrets[0]}
    client = QdrantClient(url=server.url, api_key=secrets[0], timeout=60)
    fill(client, "papers", n=20)
    assert httpx.post(f"{server.url}/collections/papers/snapshots", headers=h, timeout=60).status_code >= 400
    assert httpx.get(f"{server.url}/collections", headers={"api-key": "wrong-S3cr3t"}, timeout=10).status_code == 401
    server.stop()
    text = server.log.read_text()
    assert not ANSI.search(text), "colour codes in a log written to a file"
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) >= 3
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r.get("level") == "DEBUG" for r in records), "log_level DEBUG not honoured"
    assert any("snapshot storage" in json.dumps(r) for r in records)
    for s in secrets + ["wrong-S3cr3t"]:
        assert s not in text, f"secret {s!r} appears in the log"
