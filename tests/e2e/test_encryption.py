"""Issue 23, client-side encryption, with the official client: the storage holds no plaintext
(every object grepped for known payload strings and vector bytes), the API behaves as
without encryption (list, download and its SHA-256, ranges, recovery), two collections
holding the same points still share their pieces, a tampered byte is refused naming the
snapshot, a wrong or missing key is a clear error that changes nothing, and a rotated key
opens the same data while the old one no longer does."""
import hashlib
import os
import subprocess

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from conftest import BIN
from test_incremental import P, Storage

KEY = P + "ENCRYPTION__KEY"
N, DIM = 2000, 32


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    return Storage(request.param, tmp_path)


def fill(client, name):
    """`name` with N points whose payloads and vectors the test can look for."""
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    vecs = np.random.default_rng(5).random((N, DIM), dtype=np.float32)
    client.upsert(name, models.Batch(ids=list(range(N)), vectors=vecs.tolist(),
                                     payloads=[{"note": f"confidential-{i:06d}-needle"} for i in range(N)]),
                  wait=True)
    return vecs


def stored_objects(storage):
    """Every stored object's bytes, read behind the service's back."""
    out = {}
    for key in storage.objects():
        if storage.kind == "s3":
            out[key] = storage.s3.get_object(Bucket=storage.bucket, Key=key)["Body"].read()
        else:
            out[key] = (storage.dir / key).read_bytes()
    return out


def flip_a_byte(storage, key):
    """Flips one byte in the middle of a stored object."""
    data = bytearray(stored_objects(storage)[key])
    data[len(data) // 2] ^= 0x01
    if storage.kind == "s3":
        storage.s3.put_object(Bucket=storage.bucket, Key=key, Body=bytes(data))
    else:
        (storage.dir / key).write_bytes(bytes(data))


def error_of(server, path):
    r = httpx.get(f"{server.url}{path}", timeout=60)
    assert r.status_code >= 500, r.text
    return r.json()["status"]["error"]


@pytest.mark.parametrize("incremental", [False, True], ids=["plain", "incremental"])
def test_encrypted_storage_holds_no_plaintext_and_behaves_as_without(make_server, storage, incremental):
    server = make_server(env={**storage.env, KEY: "first passphrase", P + "INCREMENTAL": str(incremental).lower()})
    client = QdrantClient(url=server.url, timeout=120)
    vecs = fill(client, "secrets")
    snap = client.create_snapshot("secrets")
    listed = {s.name: s for s in client.list_snapshots("secrets")}
    assert listed[snap.name].checksum == snap.checksum and listed[snap.name].size == snap.size
    url = f"{server.url}/collections/secrets/snapshots/{snap.name}"
    tar = httpx.get(url, timeout=120).content
    assert len(tar) == snap.size and hashlib.sha256(tar).hexdigest() == snap.checksum
    r = httpx.get(url, headers={"Range": "bytes=1000-70000"}, timeout=60)
    assert r.status_code == 206 and r.content == tar[1000:70001]

    # The plain tar holds what the test looks for; the storage holds none of it.
    needles = [b"confidential-000001-needle", b"-needle"] + [vecs[i].tobytes()[:32] for i in (0, 777, N - 1)]
    assert all(n in tar for n in needles), "the needles are not what the collection stores"
    before = storage.bytes()
    twin = fill(client, "twin")
    assert (twin == vecs).all()
    client.create_snapshot("twin")
    objects = stored_objects(storage)
    assert len(objects) >= 3
    for key, data in objects.items():
        for n in needles:
            assert n not in data, f"{key} holds plaintext {n[:16]!r}"
        if not key.endswith(".repository/key"):
            assert data.startswith(b"SSE1"), f"{key} is not encrypted"
    if incremental:
        # The twin's snapshot shares the pieces of the first: far less than a second copy.
        assert storage.bytes() - before < before / 4, (before, storage.bytes())

    # Recovery from the encrypted storage restores exactly.
    assert client.recover_snapshot("copy", location=url, checksum=snap.checksum)
    copy = client.retrieve("copy", ids=[0, 777, N - 1], with_payload=True, with_vectors=True)
    assert [p.payload["note"] for p in copy] == [f"confidential-{i:06d}-needle" for i in (0, 777, N - 1)]
    assert np.allclose([p.vector for p in copy], vecs[[0, 777, N - 1]])
    if storage.kind == "local":
        # A file:// location of a stored snapshot reads through the decryption too.
        path = storage.dir / "secrets" / snap.name
        assert client.recover_snapshot("from_file", location=path.as_uri(), checksum=snap.checksum)
        assert client.count("from_file").count == N


@pytest.mark.parametrize("incremental", [False, True], ids=["plain", "incremental"])
def test_wrong_missing_and_rotated_keys_and_a_tampered_byte(make_server, storage, tmp_path, incremental):
    env = {**storage.env, P + "INCREMENTAL": str(incremental).lower()}
    server = make_server(env={**env, KEY: "old passphrase"})
    client = QdrantClient(url=server.url, timeout=120)
    fill(client, "secrets")
    snap = client.create_snapshot("secrets")
    tar = httpx.get(f"{server.url}/collections/secrets/snapshots/{snap.name}", timeout=120).content
    server.stop()
    objects = stored_objects(storage)
    listing = "/collections/secrets/snapshots"

    # A wrong key, no key: a clear error naming the setting; nothing in storage changes.
    for key, words in (("not the passphrase", "wrong key"), (None, "is encrypted")):
        server.env.pop(KEY, None)
        if key:
            server.env[KEY] = key
        server.start()
        message = error_of(server, listing)
        assert "storage.snapshots_config.encryption.key" in message and words in message, message
        r = httpx.post(f"{server.url}/collections/secrets/snapshots", timeout=60)
        assert r.status_code >= 500 and words in r.json()["status"]["error"], r.text
        server.stop()
        assert stored_objects(storage) == objects

    # Rotation: the new key opens the same data, the old one no longer does.
    new_key = tmp_path / "new-key"
    new_key.write_text("new passphrase\n")
    server.env[KEY] = "old passphrase"
    done = subprocess.run([os.path.abspath(BIN), "repository", "rotate-key", "--new-key-file", str(new_key)],
                          env=server.env, cwd=server.root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    changed = {k for k, v in stored_objects(storage).items() if objects.get(k) != v}
    assert len(changed) == 1 and next(iter(changed)).endswith(".repository/key"), changed
    server.env[KEY] = "new passphrase"
    server.start()
    again = httpx.get(f"{server.url}/collections/secrets/snapshots/{snap.name}", timeout=120).content
    assert again == tar
    server.stop()
    server.env[KEY] = "old passphrase"
    server.start()
    assert "wrong key" in error_of(server, listing)
    server.stop()

    # One flipped byte in the largest stored object: refused, naming the snapshot.
    server.env[KEY] = "new passphrase"
    server.start()
    largest = max(objects, key=lambda k: len(objects[k]))
    flip_a_byte(storage, largest)
    r = httpx.put(f"{server.url}/collections/secrets/snapshots/recover", json={"location": snap.name}, timeout=120)
    assert r.status_code >= 500, r.text
    assert snap.name in r.json()["status"]["error"], r.text
    assert client.count("secrets").count == N
    r = httpx.post(f"{server.url}/repository/verify?wait=true", json={"read_data": 1}, timeout=120)
    assert r.status_code == 200, r.text
    assert [d["snapshot"] for d in r.json()["result"]["damaged"]] == [snap.name], r.text
    try:
        body = httpx.get(f"{server.url}/collections/secrets/snapshots/{snap.name}", timeout=120).content
        assert body != tar, "a tampered snapshot downloaded whole"
    except httpx.HTTPError:
        pass  # the transfer ends with an error: as it should
