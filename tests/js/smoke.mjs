// The official JS client (@qdrant/js-client-rest) against a running snapstream:
// collections, points, and the snapshot calls, with the wire quirks of this client
// (bare-vector queries, `{}` bodies, no `wait` unless given, 202 treated as an error).
// Usage: node smoke.mjs http://127.0.0.1:PORT ; exits non-zero on the first failure.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { QdrantClient } from "@qdrant/js-client-rest";

const url = process.argv[2];
const warnings = [];
console.warn = (...args) => warnings.push(args.join(" "));
const client = new QdrantClient({ url, checkCompatibility: true });
const dim = 16;
const vec = (i) => Array.from({ length: dim }, (_, j) => Math.sin(i * 31 + j));

await client.createCollection("js", { vectors: { size: dim, distance: "Cosine" } });
assert.deepEqual(await client.collectionExists("js"), { exists: true });
const points = Array.from({ length: 200 }, (_, i) => ({ id: i, vector: vec(i), payload: { n: i, tag: i % 2 ? "odd" : "even" } }));
const up = await client.upsert("js", { wait: true, points });
assert.equal(up.status, "completed");
await client.upsert("js", { wait: true, batch: { ids: [1000, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"], vectors: [vec(1000), vec(1001)] } });
const info = await client.getCollection("js");
assert.equal(info.points_count, 202);
assert.deepEqual(info.config.params.vectors, { size: dim, distance: "Cosine" });

const q = await client.query("js", { query: vec(7), limit: 3, with_payload: true });
assert.equal(q.points[0].id, 7);
assert.equal(q.points[0].payload.n, 7);
const s = await client.search("js", { vector: vec(9), limit: 1 });
assert.equal(s[0].id, 9);
const sc = await client.scroll("js", { limit: 5, filter: { must: [{ key: "tag", match: { value: "odd" } }] } });
assert.deepEqual(sc.points.map((p) => p.id), [1, 3, 5, 7, 9]);
assert.equal((await client.count("js", { exact: true })).count, 202);
const got = await client.retrieve("js", { ids: ["5c56c793-69f3-4fbf-87e6-c4bf54c28c26"], with_vector: true });
assert.equal(got[0].vector.length, dim);

// Snapshots: create (JSON body `{}`, no wait), list, download, recover, delete.
const snap = await client.createSnapshot("js");
assert.ok(snap.name.endsWith(".snapshot") && snap.size > 0 && snap.checksum.length === 64);
const listed = await client.listSnapshots("js");
assert.deepEqual(listed.map((d) => d.name), [snap.name]);
const body = Buffer.from(await (await fetch(`${url}/collections/js/snapshots/${snap.name}`)).arrayBuffer());
assert.equal(createHash("sha256").update(body).digest("hex"), snap.checksum);
const location = `${url}/collections/js/snapshots/${snap.name}`;
assert.equal(await client.recoverSnapshot("js_copy", { location, checksum: snap.checksum }), true);
assert.equal((await client.count("js_copy", { exact: true })).count, 202);
assert.deepEqual((await client.query("js_copy", { query: vec(7), limit: 1 })).points[0].id, 7);

// Upload the way JS users do it: fetch with FormData and the field `snapshot`.
const form = new FormData();
form.append("snapshot", new Blob([body]), "upload_me.snapshot");
const res = await fetch(`${url}/collections/js_up/snapshots/upload?priority=snapshot&checksum=${snap.checksum}`, { method: "POST", body: form });
assert.equal(res.status, 200, await res.text());
assert.equal((await client.count("js_up", { exact: true })).count, 202);

// wait=false answers 202, which this client reports as an error (as with real Qdrant).
await assert.rejects(client.createSnapshot("js", { wait: false }), /202/);

const full = await client.createFullSnapshot();
assert.ok((await client.listFullSnapshots()).some((d) => d.name === full.name));
assert.equal(await client.deleteFullSnapshot(full.name), true);
assert.equal(await client.deleteSnapshot("js", snap.name), true);
await assert.rejects(client.getCollection("missing"), (e) => e.status === 404);
assert.equal(await client.deleteCollection("missing"), false);
// The version check runs in the background from the constructor; it has long finished.
assert.deepEqual(warnings.filter((w) => /version/i.test(w)), []);
console.log("js client smoke: ok");
