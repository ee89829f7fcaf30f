"""Issue 23, integrity: a byte flipped in one stored piece and another piece deleted, on local
disk and on S3, are caught on every read path (whole download, a Range over the damaged byte,
recovery), named in the error (snapshot, piece, what is wrong; not a "wrong input"),
reported by a verification with exactly the snapshot they damage, and repaired by the next
create of the same data."""
import hashlib
import json

import httpx
import pytest
from qdrant_client import QdrantClient

from helpers import wait_for
from test_incremental import P, Storage, load


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    return Storage(request.param, tmp_path)


class Stored:
    """Reads and damages objects of a storage directly, behind the service's back."""

    def __init__(self, storage):
        self.s = storage

    def key(self, rel):
        return f"{self.s.prefix}/{rel}" if self.s.kind == "s3" else rel

    def get(self, rel):
        if self.s.kind == "s3":
            return self.s.s3.get_object(Bucket=self.s.bucket, Key=self.key(rel))["Body"].read()
        return (self.s.dir / rel).read_bytes()

    def put(self, rel, data):
        if self.s.kind == "s3":
            self.s.s3.put_object(Bucket=self.s.bucket, Key=self.key(rel), Body=data)
        else:
            (self.s.dir / rel).write_bytes(data)

    def delete(self, rel):
        if self.s.kind == "s3":
            self.s.s3.delete_object(Bucket=self.s.bucket, Key=self.key(rel))
        else:
            (self.s.dir / rel).unlink()


def pieces_of(stored, collection, name):
    m = json.loads(stored.get(f"{collection}/{name}.manifest"))
    return [h for e in m["entries"] for h in e.get("pieces", [])]


def verify(server):
    r = httpx.post(f"{server.url}/repository/verify?wait=true", json={"read_data": 1}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_damage_is_caught_on_every_read_path_named_verified_and_repaired(make_server, storage):
    server = make_server(env={**storage.env, P + "INCREMENTAL": "true"})
    client = QdrantClient(url=server.url, timeout=300)
    load(server, "a", 20_000, seed=1)
    load(server, "b", 20_000, seed=2)
    a1 = client.create_snapshot("a")
    b1 = client.create_snapshot("b")
    url = f"{server.url}/collections/a/snapshots/{a1.name}"
    whole = httpx.get(url, timeout=300).content
    assert hashlib.sha256(whole).hexdigest() == a1.checksum
    stored = Stored(storage)
    shared = set(pieces_of(stored, "b", b1.name))
    own = [h for h in dict.fromkeys(pieces_of(stored, "a", a1.name)) if h not in shared]
    big = [h for h in own if len(stored.get(f".repository/pieces/{h}")) > 100_000]
    assert len(big) >= 2, "the test needs two large pieces that only `a` holds"
    flipped, deleted = big[0], big[1]
    data = bytearray(stored.get(f".repository/pieces/{flipped}"))
    at = whole.find(bytes(data))
    assert at >= 0
    data[len(data) // 2] ^= 0xFF
    stored.put(f".repository/pieces/{flipped}", bytes(data))
    stored.delete(f".repository/pieces/{deleted}")

    # Whole download, and a Range over the damaged byte: each ends with an error (a failed
    # status or a broken transfer), never with wrong bytes.
    damaged_byte = at + len(data) // 2
    around = (damaged_byte - 10, damaged_byte + 10)
    for headers, want in (({}, whole), ({"range": "bytes=%d-%d" % around}, whole[around[0]:around[1] + 1])):
        try:
            r = httpx.get(url, headers=headers, timeout=300)
            assert r.status_code >= 400, f"{headers}: served {r.status_code}, same bytes: {r.content == want}"
        except httpx.HTTPError:
            pass
    # Recovery: a storage fault, naming the snapshot and the piece, not "wrong input".
    r = httpx.put(f"{server.url}/collections/restored/snapshots/recover?wait=true",
                  json={"location": f"a/{a1.name}"}, timeout=300)
    assert r.status_code == 500, r.text
    msg = r.json()["status"]["error"]
    assert "Wrong input" not in msg and a1.name in msg and "damaged" in msg, msg
    assert flipped in msg or deleted in msg, msg

    # Verification: exactly snapshot a1, for both pieces; b1 is healthy.
    report = verify(server)
    # With read_data 1 every stored piece is read back: all but the deleted one.
    assert report["snapshots_checked"] == 2 and report["pieces_read"] == report["pieces_checked"] - 1
    rows = {(d["collection"], d["snapshot"], d["piece"], d["reason"]) for d in report["damaged"]}
    assert rows == {("a", a1.name, flipped, "hash mismatch"), ("a", a1.name, deleted, "missing")}, rows
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "snapstream_verify_damaged_snapshots 1" in metrics, metrics

    # The next create of the same data writes fresh copies: a1 is whole again.
    client.create_snapshot("a")
    assert hashlib.sha256(httpx.get(url, timeout=300).content).hexdigest() == a1.checksum
    assert verify(server)["damaged"] == []
    wait_for(lambda: "snapstream_verify_damaged_snapshots 0" in httpx.get(f"{server.url}/metrics").text, 10,
             "the damage gauge back at 0")


def test_verify_needs_the_full_key_and_a_fraction(make_server):
    server = make_server(env={"QDRANT__SERVICE__API_KEY": "full", "QDRANT__SERVICE__READ_ONLY_API_KEY": "ro"})
    for key, status in ((None, 401), ("ro", 403)):
        headers = {"api-key": key} if key else {}
        r = httpx.post(f"{server.url}/repository/verify", headers=headers, timeout=30)
        assert r.status_code == status, r.text
    r = httpx.post(f"{server.url}/repository/verify", headers={"api-key": "full"}, json={"read_data": 2},
                   timeout=30)
    assert r.status_code == 400 and "read_data" in r.text, r.text
    r = httpx.post(f"{server.url}/repository/verify?wait=false", headers={"api-key": "full"}, timeout=30)
    assert r.status_code == 202, r.text
    code, out = server.run_once(["verify", "--read-data", "1"])
    assert code == 0 and '"damaged": []' in out, out
