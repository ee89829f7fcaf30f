"""Issue 23, cost: with nothing to do, snapstream sends no request to the bucket, schedules
included; an incremental create after 1% of the points changed lists a small constant number
of times. Counted by the service's own per-kind counter of HTTP requests to the store
(`snapstream_storage_requests_total`), against the real S3 server."""
import re
import time
import uuid

import httpx
from qdrant_client import QdrantClient

from helpers import wait_for
from test_incremental import P, change_one_percent, load
from test_s3 import s3_env

N = 20_000


def requests(server):
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^snapstream_storage_requests_total\{kind="(\w+)"\} (\S+)$', text, re.M)}


def scheduled(server):
    """Scheduled snapshots made so far (read from /metrics: listing snapshots would list the bucket)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    m = re.search(r'^snapstream_scheduled_snapshots_total\{outcome="ok"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0


def delta(after, before):
    return {k: int(v - before.get(k, 0)) for k, v in after.items() if v != before.get(k, 0)}


def test_idle_hours_send_nothing_and_a_create_lists_a_few_times(make_server):
    env = {**s3_env(f"e2e-req-{uuid.uuid4().hex}"), P + "INCREMENTAL": "true", P + "SCHEDULE__INTERVAL_SEC": "1"}
    server = make_server(env=env)
    client = QdrantClient(url=server.url, timeout=300)
    load(server, "a", N)
    wait_for(lambda: scheduled(server) >= 1, 60, "the first scheduled snapshot")
    # Let the work around the snapshots end (a tick may have caught the load half done; the
    # leases released, the collector's pass).
    last = {}
    for _ in range(60):
        now = (requests(server), scheduled(server))
        if now == last:
            break
        last = now
        time.sleep(2)
    last, taken = last
    # Eight scheduled ticks of an unchanged collection, with an hour scaled into seconds:
    # not one request (no listing, no lease, no poll).
    time.sleep(8)
    assert delta(requests(server), last) == {}, "requests sent while idle"
    assert scheduled(server) == taken

    change_one_percent(server, "a", N, 1)
    before = requests(server)
    # The schedule takes the change; counted until its snapshot is listed and all is quiet.
    wait_for(lambda: scheduled(server) == taken + 1, 60, "the scheduled snapshot of the change")
    quiet = {}
    for _ in range(30):
        time.sleep(2)
        now = requests(server)
        if now == quiet:
            break
        quiet = now
    spent = delta(quiet, before)
    print(f"one scheduled incremental create after 1% changed: {spent}")
    assert 0 < spent.get("list", 0) <= 6, spent
    assert len(client.list_snapshots("a")) == taken + 1
    assert spent.get("put", 0) > 0, spent
