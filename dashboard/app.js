// The snapshots page: plain JavaScript over the service's own REST API.
"use strict";

const state = { key: sessionStorage.getItem("snapstream-key") || "", session: null, recover: null, restore: null };
const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h["api-key"] = state.key;
  return h;
}

// The service's own message: Qdrant's envelope puts it in `status.error`.
async function failure(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (body && body.status && body.status.error) return new Error(body.status.error);
  } catch (_) { /* not JSON */ }
  return new Error(text || `${resp.status} ${resp.statusText}`);
}

async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "content-type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  return resp;
}

async function result(path) {
  return (await (await api("GET", path)).json()).result;
}

function showError(e) {
  $("error-text").textContent = e.message || String(e);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function button(label, cls, onClick, aria) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  if (aria) b.setAttribute("aria-label", aria);
  b.addEventListener("click", onClick);
  return b;
}

function canWrite() {
  return state.session && state.session.access === "manage";
}

// `base` is the snapshots path: `/collections/{c}/snapshots` or `/snapshots`.
function snapshotTable(list, base, collection) {
  if (!list.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No snapshots.";
    return p;
  }
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>Name</th><th>Created (UTC)</th><th>Size</th><th>SHA-256</th><th>Stored in</th><th><span class=\"visually-hidden\">Actions</span></th></tr></thead>";
  const body = document.createElement("tbody");
  for (const s of list) {
    const tr = document.createElement("tr");
    tr.dataset.snapshot = s.name;
    const cell = (label, cls, content) => {
      const td = document.createElement("td");
      td.dataset.label = label;
      if (cls) td.className = cls;
      if (content instanceof Node) td.appendChild(content); else td.textContent = content;
      tr.appendChild(td);
      return td;
    };
    cell("Name", "name", s.name);
    cell("Created", "", s.creation_time || "");
    cell("Size", "size", size(s.size));
    const code = document.createElement("code");
    code.textContent = s.checksum ? s.checksum.slice(0, 16) + "…" : "—";
    if (s.checksum) code.title = s.checksum;
    cell("SHA-256", "sum", code).dataset.checksum = s.checksum || "";
    cell("Stored in", "", (state.session && state.session.storage) || "");
    const actions = cell("Actions", "row-actions", "");
    const url = `${base}/${encodeURIComponent(s.name)}`;
    actions.appendChild(button("Download", "secondary download", () => download(url, s.name), `Download ${s.name}`));
    if (canWrite()) {
      if (collection) {
        actions.appendChild(button("Recover", "secondary recover", () => openRecover(collection, s.name), `Recover ${s.name}`));
      }
      actions.appendChild(button("Delete", "danger delete", () => remove(url, s.name), `Delete ${s.name}`));
    }
    body.appendChild(tr);
  }
  table.appendChild(body);
  return table;
}

async function download(url, name) {
  clearError();
  try {
    // With a key the request needs its header, so the bytes come through fetch; without
    // one the browser streams the file to disk itself.
    let href = url;
    if (state.key) href = URL.createObjectURL(await (await api("GET", url)).blob());
    const a = document.createElement("a");
    a.href = href;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    if (href !== url) setTimeout(() => URL.revokeObjectURL(href), 60000);
  } catch (e) { showError(e); }
}

async function remove(url, name) {
  clearError();
  if (!window.confirm(`Delete snapshot ${name}? This cannot be undone.`)) return;
  try {
    await api("DELETE", `${url}?wait=true`);
    await refresh();
  } catch (e) { showError(e); }
}

// Starts a create in the background and moves `bar` with the operation's progress.
async function create(path, bar, btn) {
  clearError();
  btn.disabled = true;
  bar.hidden = false;
  bar.removeAttribute("value");
  try {
    const resp = await api("POST", `${path}?wait=false`);
    const id = resp.headers.get("x-operation-id");
    for (;;) {
      const op = await result(`/operations/${id}`);
      if (op.bytes_total) {
        bar.max = op.bytes_total;
        bar.value = Math.min(op.bytes_done, op.bytes_total);
      }
      bar.dataset.done = op.bytes_done;
      if (op.state === "failed") throw new Error(op.error);
      if (op.state === "completed") { bar.max = 1; bar.value = 1; break; }
      await new Promise((r) => setTimeout(r, 150));
    }
    await refresh();
  } catch (e) { showError(e); }
  finally { btn.disabled = false; bar.hidden = true; }
}

function openRecover(collection, name) {
  state.recover = { collection, name };
  $("recover-what").textContent = `${name} (of ${collection})`;
  $("recover-target").value = collection;
  $("recover-priority").value = "";
  $("recover-dialog").showModal();
  $("recover-target").focus();
}

async function recover(ev) {
  ev.preventDefault();
  const { collection, name } = state.recover;
  const target = $("recover-target").value.trim();
  const priority = $("recover-priority").value;
  $("recover-dialog").close();
  clearError();
  const body = { location: target === collection ? name : `${collection}/${name}` };
  if (priority) body.priority = priority;
  try {
    await api("PUT", `/collections/${encodeURIComponent(target)}/snapshots/recover?wait=true`, body);
    await refresh();
  } catch (e) { showError(e); }
}

function upload(ev) {
  ev.preventDefault();
  clearError();
  const target = $("upload-collection").value.trim();
  const priority = $("upload-priority").value;
  const file = $("upload-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("snapshot", file);
  const q = priority ? `&priority=${priority}` : "";
  const xhr = new XMLHttpRequest();
  const bar = $("upload-progress");
  const btn = $("upload-button");
  xhr.open("POST", `/collections/${encodeURIComponent(target)}/snapshots/upload?wait=true${q}`);
  if (state.key) xhr.setRequestHeader("api-key", state.key);
  bar.hidden = false;
  bar.value = 0;
  btn.disabled = true;
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; }
  };
  xhr.onload = async () => {
    bar.hidden = true;
    btn.disabled = false;
    if (xhr.status >= 200 && xhr.status < 300) {
      $("upload-form").reset();
      await refresh();
    } else {
      showError(await failure(new Response(xhr.responseText, { status: xhr.status })));
    }
  };
  xhr.onerror = () => {
    bar.hidden = true;
    btn.disabled = false;
    showError(new Error("The upload failed: the connection was lost."));
  };
  xhr.send(form);
}

function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

// One source: its peers, a "Back up now" button and its backups, each with "Restore".
function sourceCard(src, backups) {
  const card = document.createElement("article");
  card.className = "collection source";
  card.dataset.source = src.name;
  const head = document.createElement("header");
  const h = document.createElement("h3");
  h.textContent = src.name;
  const where = document.createElement("span");
  where.className = "muted";
  const up = src.peers.filter((p) => p.reachable).length;
  where.textContent = src.error ? `${src.url}: ${src.error}` : `${src.url}, ${up} of ${src.peers.length} peers answering`;
  head.append(h, where);
  card.appendChild(head);
  const actions = document.createElement("div");
  actions.className = "actions write-only";
  const run = button("Back up now", "backup-now", async () => {
    clearError();
    run.disabled = true;
    try {
      await api("POST", `/backup/sources/${encodeURIComponent(src.name)}/backups?wait=true`);
      await refresh();
    } catch (e) { showError(e); } finally { run.disabled = false; }
  }, `Back up ${src.name} now`);
  actions.appendChild(run);
  card.appendChild(actions);
  if (!backups.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No backups.";
    card.appendChild(p);
    return card;
  }
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>Backup</th><th>Age</th><th>Collections</th><th>Size</th><th>Stored</th><th><span class=\"visually-hidden\">Actions</span></th></tr></thead>";
  const body = document.createElement("tbody");
  for (const b of backups) {
    const tr = document.createElement("tr");
    tr.dataset.backup = b.id;
    for (const text of [b.id, age(b.finished_at), Object.keys(b.collections).join(", "), size(b.size), size(b.stored_bytes)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    td.className = "write-only";
    td.appendChild(button("Restore", "secondary restore", () => openRestore(src.name, b.id), `Restore backup ${b.id}`));
    tr.appendChild(td);
    body.appendChild(tr);
  }
  table.appendChild(body);
  card.appendChild(table);
  return card;
}

function openRestore(source, id) {
  state.restore = { source, id };
  $("restore-what").textContent = `${id} (of ${source})`;
  $("restore-overwrite").checked = false;
  $("restore-dialog").showModal();
  $("restore-to").focus();
}

async function restore(ev) {
  ev.preventDefault();
  const { source, id } = state.restore;
  const body = { to: $("restore-to").value.trim(), overwrite: $("restore-overwrite").checked };
  if ($("restore-key").value) body.api_key = $("restore-key").value;
  $("restore-dialog").close();
  clearError();
  try {
    const r = await api("POST", `/backup/sources/${encodeURIComponent(source)}/backups/${encodeURIComponent(id)}/restore?wait=true`, body);
    const out = (await r.json()).result;
    if (!out.verified) showError(new Error(`Restored, but the check found differences: ${JSON.stringify(out.collections)}`));
  } catch (e) { showError(e); }
}

async function refreshBackups() {
  const sources = await result("/backup/sources");
  $("backups-panel").hidden = sources.length === 0;
  const cards = [];
  for (const src of sources) {
    cards.push(sourceCard(src, await result(`/backup/sources/${encodeURIComponent(src.name)}/backups`)));
  }
  $("sources").replaceChildren(...cards);
}

async function refresh() {
  const names = (await result("/collections")).collections.map((c) => c.name).sort();
  const root = $("collections");
  const cards = [];
  for (const name of names) {
    const enc = encodeURIComponent(name);
    const [info, snaps] = await Promise.all([
      result(`/collections/${enc}`),
      result(`/collections/${enc}/snapshots`),
    ]);
    const card = $("collection-template").content.firstElementChild.cloneNode(true);
    card.dataset.collection = name;
    card.querySelector(".name").textContent = name;
    card.querySelector(".points").textContent = `${info.points_count} points`;
    card.querySelector(".status").textContent = info.status;
    const btn = card.querySelector(".create");
    const bar = card.querySelector(".create-progress");
    btn.setAttribute("aria-label", `Create a snapshot of ${name}`);
    bar.setAttribute("aria-label", `Snapshot progress of ${name}`);
    btn.addEventListener("click", () => create(`/collections/${enc}/snapshots`, bar, btn));
    card.querySelector(".snapshots").appendChild(snapshotTable(snaps, `/collections/${enc}/snapshots`, name));
    cards.push(card);
  }
  root.replaceChildren(...cards);
  $("no-collections").hidden = names.length > 0;
  $("full-snapshots").replaceChildren(snapshotTable(await result("/snapshots"), "/snapshots", null));
  await refreshBackups();
}

async function start() {
  clearError();
  const resp = await fetch("/dashboard/session", { headers: headers() });
  state.session = await resp.json();
  const s = state.session;
  if (s.keys_required && s.access === "none") {
    $("main").hidden = true;
    $("key-form").hidden = false;
    $("change-key").hidden = true;
    $("key-input").value = "";
    if (state.key) showError(new Error("That API key was not accepted."));
    $("key-input").focus();
    return;
  }
  $("key-form").hidden = true;
  $("main").hidden = false;
  $("change-key").hidden = !s.keys_required;
  document.body.classList.toggle("read-only", s.access !== "manage");
  $("storage").textContent = s.storage ? `Snapshots stored in ${s.storage}` : "";
  try { await refresh(); } catch (e) { showError(e); }
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("key-input").value;
  sessionStorage.setItem("snapstream-key", state.key);
  start();
});
$("change-key").addEventListener("click", () => {
  state.key = "";
  sessionStorage.removeItem("snapstream-key");
  start();
});
$("error-close").addEventListener("click", clearError);
$("create-full").addEventListener("click", () => create("/snapshots", $("full-progress"), $("create-full")));
$("recover-form").addEventListener("submit", recover);
$("recover-cancel").addEventListener("click", () => $("recover-dialog").close());
$("upload-form").addEventListener("submit", upload);
$("restore-form").addEventListener("submit", restore);
$("restore-cancel").addEventListener("click", () => $("restore-dialog").close());
start();
