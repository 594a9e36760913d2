// The review page: search by photo, name the clusters of unnamed faces, take a face out of a person, and resolve
// what the gallery check finds (merge two names, move a face, "different people") and the faces the calibration
// left out as looking enrolled (name them, or confirm them as strangers).
// Plain JavaScript against the same /v1 API every client uses; the API key stays in this tab (sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("arcmatch-key") || "", gallery: "", clusterOffset: 0,
                galleriesKnown: Promise.resolve() };
const PAGE = 12;
const PEOPLE = 50;

function say(text, error = false) {
  $("status").textContent = text;
  $("status").style.color = error ? "#ff8a80" : "#ffd479";
}

// every face route of the chosen gallery is under /v1/galleries/{gallery}/ (the list of galleries is not)
const inGallery = (path) => (state.gallery && path.startsWith("/v1/") && !path.startsWith("/v1/galleries")
  ? `/v1/galleries/${encodeURIComponent(state.gallery)}/${path.slice(4)}` : path);

async function api(path, options = {}) {
  // a face route waits until the key's galleries are known: a click before that would go to the wrong one
  if (path.startsWith("/v1/") && !path.startsWith("/v1/galleries")) await state.galleriesKnown.catch(() => {});
  const headers = { "X-API-Key": state.key, ...(options.headers || {}) };
  const response = await fetch(inGallery(path), { ...options, headers });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();
const post = (path, body) => json(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify(body) });

function faceImage(faceId) {
  // <img> cannot send the key, so the thumbnail is fetched and shown from a blob URL
  const img = document.createElement("img");
  img.alt = `face ${faceId}`;
  img.dataset.face = faceId;
  api(`/v1/faces/${faceId}/image`).then((r) => r.blob()).then((b) => { img.src = URL.createObjectURL(b); })
    .catch(() => { img.alt = "no image kept"; });
  return img;
}

function faceTile(faceId, onReject) {
  const tile = document.createElement("div");
  tile.className = "face";
  tile.append(faceImage(faceId));
  if (onReject) {
    const button = document.createElement("button");
    button.textContent = "✕";
    button.title = "not this person";
    button.dataset.reject = faceId;
    button.addEventListener("click", () => onReject(faceId));
    tile.append(button);
  }
  return tile;
}

// search: the photo with a box and a label per face
async function search(file) {
  const form = new FormData();
  form.append("image", file);
  const answer = await json("/v1/search", { method: "POST", body: form });
  const bitmap = await createImageBitmap(file);
  const canvas = $("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.hidden = false;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const list = $("search-result");
  list.replaceChildren();
  const line = Math.max(2, Math.round(bitmap.width / 200));
  for (const face of answer.faces) {
    const [x1, y1, x2, y2] = face.face.box;
    const name = face.match ? face.identity : "unknown";
    const label = `${name} ${face.score.toFixed(2)}`;
    ctx.lineWidth = line;
    ctx.strokeStyle = face.match ? "#2ecc71" : "#e74c3c";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.font = `${Math.max(12, line * 7)}px system-ui, sans-serif`;
    const width = ctx.measureText(label).width + 8;
    const height = Math.max(12, line * 7) + 6;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillRect(x1, Math.max(0, y1 - height), width, height);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + 4, Math.max(0, y1 - height) + height - 5);
    const item = document.createElement("li");
    item.className = face.match ? "match" : "unknown";
    item.dataset.identity = face.identity || "";
    item.textContent = `${label} (threshold ${face.threshold.toFixed(2)})`;
    list.append(item);
  }
}

// clusters: name a group, and it becomes a person
async function loadClusters(append = false) {
  let page;
  try {
    page = await json(`/v1/clusters?limit=${PAGE}&offset=${state.clusterOffset}`);
  } catch (error) {
    $("cluster-list").replaceChildren();
    $("clusters-count").textContent = error.status === 404 ? "(not clustered yet: run arcmatch cluster)" : "";
    if (error.status !== 404) throw error;
    return;
  }
  if (!append) $("cluster-list").replaceChildren();
  $("clusters-count").textContent = `(${page.total} groups)`;
  for (const c of page.clusters) {
    const card = document.createElement("div");
    card.className = "card cluster";
    card.dataset.cluster = c.cluster;
    const title = document.createElement("h3");
    title.textContent = `${c.size} faces · cohesion ${c.cohesion.toFixed(2)}`;
    const faces = document.createElement("div");
    faces.className = "faces";
    faces.append(...c.face_ids.map((f) => faceTile(f)));
    const form = document.createElement("form");
    const input = document.createElement("input");
    input.placeholder = "name this person";
    input.required = true;
    input.name = "identity";
    const button = document.createElement("button");
    button.textContent = "Name";
    form.append(input, button);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      promote(c.cluster, input.value.trim(), c.members).catch((e) => say(e.message, true));
    });
    card.append(title, faces, form);
    $("cluster-list").append(card);
  }
  $("clusters-more").hidden = state.clusterOffset + PAGE >= page.total;
}

// a naming that matches someone else, or was said not to be this person, answers 409: a person decides. A 409
// that no "anyway" can answer (`final`: a cluster that holds other faces than the page showed) is only said
async function postOrAsk(path, body, question, final = () => false) {
  try {
    return await post(path, { ...body, proceed: false });
  } catch (error) {
    if (error.status === 409 && !final(error) && confirm(`${error.message}\n\n${question}`)) {
      return post(path, { ...body, proceed: true });
    }
    throw error;
  }
}

// `members`: the cluster's faces as this page showed them; clustered again since, the service refuses, and the
// page shows the clusters as they are now
async function promote(cluster, identity, members) {
  const stale = (error) => error.message.includes("look at it again");
  let named;
  try {
    named = await postOrAsk(`/v1/clusters/${cluster}/promote`, { identity, members }, `Name them ${identity} anyway?`,
                            stale);
  } catch (error) {
    if (error.status === 409 && stale(error)) {
      state.clusterOffset = 0;
      await loadClusters();
    }
    throw error;
  }
  say(`${named.face_ids.length} faces are now ${named.identity}` +
      (named.skipped.length ? ` (${named.skipped.length} left out)` : ""));
  state.clusterOffset = 0;
  await Promise.all([loadClusters(), loadIdentities()]);
}

// the faces kept from searches that nobody named: strangers, once the people among them are named
async function keptStrangers() {
  if (!confirm("Every face kept from searches that nobody has named becomes a confirmed stranger. Name the people " +
               "you know among them first. Go on?")) return;
  const marked = await post("/v1/gallery/strangers/kept", {});
  say(`${marked.face_ids.length} faces kept from searches are confirmed strangers: the next calibration counts them`);
}

// people: their faces, and "not this person"; a page at a time, in name order (More: the next, by its cursor)
async function loadIdentities(append = false) {
  const cursor = append ? state.identityCursor : null;
  const page = await json(`/v1/identities?limit=${PEOPLE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  const list = $("identity-list");
  if (!append) list.replaceChildren();
  state.identityCursor = page.next_cursor;
  $("identities-more").hidden = page.next_cursor === null;
  const shown = list.children.length + page.identities.length;
  $("identities-count").textContent = `(${shown}${page.next_cursor === null ? "" : " shown, more to come"})`;
  for (const { identity } of page.identities) {
    const card = document.createElement("div");
    card.className = "card identity";
    card.dataset.identity = identity;
    const title = document.createElement("h3");
    title.textContent = identity;
    const faces = document.createElement("div");
    faces.className = "faces";
    card.append(title, faces);
    list.append(card);
    json(`/v1/identities/${enc(identity)}`).then((person) => {
      const n = person.faces.length;
      title.textContent = `${identity} · ${n} ${n === 1 ? "face" : "faces"}`;
      faces.append(...person.faces.slice(0, 12).map((f) => faceTile(f.face_id, (id) => reject(identity, id))));
    });
  }
}

async function reject(identity, faceId) {
  await post(`/v1/identities/${enc(identity)}/faces/${faceId}/reject`, {});
  say(`face ${faceId} is no longer ${identity}`);
  await loadIdentities();
}

// gallery health: what `arcmatch gallery check` lists, each with the actions that resolve it
// a path segment; "." and ".." encoded too, which a URL would otherwise resolve as "here" and "up"
const enc = (value) => {
  const text = encodeURIComponent(value);
  return text === "." || text === ".." ? text.replaceAll(".", "%2E") : text;
};

function button(text, data, action) {
  const b = document.createElement("button");
  b.textContent = text;
  Object.assign(b.dataset, data);
  b.addEventListener("click", () => action().catch((e) => say(e.message, true)));
  return b;
}

function findingCard(kind, title) {
  const card = document.createElement("div");
  card.className = `card finding ${kind}`;
  const h = document.createElement("h3");
  h.textContent = title;
  card.append(h);
  return card;
}

function personRow(name) {
  const row = document.createElement("div");
  const label = document.createElement("p");
  label.className = "who";
  label.textContent = name;
  const faces = document.createElement("div");
  faces.className = "faces";
  row.append(label, faces);
  json(`/v1/identities/${enc(name)}`).then((person) => {
    label.textContent = `${name} · ${person.faces.length} ${person.faces.length === 1 ? "face" : "faces"}`;
    faces.append(...person.faces.slice(0, 4).map((f) => faceTile(f.face_id)));
  }).catch(() => { label.textContent = `${name} (gone)`; });
  return row;
}

async function resolved(text) {
  say(text);
  await Promise.all([checkHealth(), loadIdentities()]);
}

async function merge(into, other) {
  if (!confirm(`Every face of ${other} becomes ${into}'s. Merge?`)) return;
  const merged = await postOrAsk(`/v1/identities/${enc(into)}/merge`, { identity: other }, "Merge them anyway?");
  await resolved(`${merged.face_ids.length} faces of ${other} are now ${into}'s` +
                 (merged.skipped.length ? ` (${merged.skipped.length} left: rejected from ${into})` : ""));
}

function duplicateCard(d) {
  const card = findingCard("duplicate", d.misfiled
    ? `made by one misfiled photo (score ${d.score.toFixed(2)}): move it, below, rather than merge`
    : d.same_photo ? `one photo under both names (score ${d.score.toFixed(2)})`
      : `one person under two names? (score ${d.score.toFixed(2)})`);
  card.dataset.first = d.first;
  card.dataset.second = d.second;
  card.append(personRow(d.first), personRow(d.second), actionRow(
    button(`Merge into ${d.first}`, { merge: d.first }, () => merge(d.first, d.second)),
    button(`Merge into ${d.second}`, { merge: d.second }, () => merge(d.second, d.first)),
    button("Different people", { distinct: "" }, async () => {
      await post("/v1/gallery/distinct", { identities: [d.first, d.second] });
      await resolved(`${d.first} and ${d.second} are kept apart from now on`);
    })));
  return card;
}

// "It is NAME": a hard photo of the right person stays where it is and is not listed again
function confirmButton(identity, face) {
  return button(`It is ${identity}`, { confirm: face }, async () => {
    await post(`/v1/identities/${enc(identity)}/faces/${face}/confirm`, {});
    await resolved(`face ${face} is ${identity}'s: not listed again`);
  });
}

// "Not NAME": the face leaves the identity, unlabelled, remembering whom it is not
function rejectButton(identity, face) {
  return button(`Not ${identity}`, { reject: face }, async () => {
    await post(`/v1/identities/${enc(identity)}/faces/${face}/reject`, {});
    await resolved(`face ${face} is no longer ${identity}`);
  });
}

// a finding about one photo: its card with the photo and a line of scores (the caller adds the rest)
function photoCard(kind, title, face, said) {
  const card = findingCard(kind, title);
  card.dataset.face = face;
  const faces = document.createElement("div");
  faces.className = "faces";
  faces.append(faceTile(face));
  const scores = document.createElement("p");
  scores.className = "who";
  scores.textContent = said;
  card.append(faces, scores);
  return card;
}

function actionRow(...buttons) {
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(...buttons);
  return actions;
}

function misfitCard(m) {
  const card = photoCard("misfit", `filed under ${m.identity}, looks like ${m.other}`, m.face_id,
    `best with ${m.identity}: ${m.own_best.toFixed(2)} · with ${m.other}: ${m.other_best.toFixed(2)}`);
  card.append(actionRow(
    button(`Move to ${m.other}`, { move: m.other }, async () => {
      await post(`/v1/identities/${enc(m.identity)}/faces/${m.face_id}/move`, { identity: m.other });
      await resolved(`face ${m.face_id} is now ${m.other}'s`);
    }),
    rejectButton(m.identity, m.face_id),
    confirmButton(m.identity, m.face_id)));
  return card;
}

// a photo its identity's other photos score no higher with than one stranger in ten would: someone else's photo
// under this name (shown beside the identity's faces), or a hard one of the right person
function strayCard(s) {
  const card = photoCard("stray", `filed under ${s.identity}, looks like no one else of ${s.identity}`, s.face_id,
    `best with ${s.identity}'s other photos: ${s.own_best.toFixed(2)} ` +
    `(${Math.round(100 * s.chance)}% of strangers' identities score as high with it)`);
  card.append(personRow(s.identity), actionRow(rejectButton(s.identity, s.face_id),
    confirmButton(s.identity, s.face_id)));
  return card;
}

// a name whose photos look like two people or more (a wrong merge): each group's photos; a group that is someone
// else moves to a name of its own, and "one person" confirms the other groups' photos as the name's
function splitCard(s) {
  const card = findingCard("split", `${s.identity}: photos of ${s.groups.length} people? ` +
    `(best score between the groups ${s.cross_best.toFixed(2)}; ${Math.round(100 * s.chance)}% of ` +
    "strangers' identities score as high)");
  card.dataset.identity = s.identity;
  s.groups.forEach((group, number) => {
    const label = document.createElement("p");
    label.className = "who";
    label.textContent = `group ${number + 1} · ${group.length} faces`;
    const faces = document.createElement("div");
    faces.className = "faces";
    faces.append(...group.slice(0, 8).map((face) => faceTile(face)));
    card.append(label, faces, actionRow(button(`Group ${number + 1} is someone else`, { split: number },
      () => nameGroup(s.identity, group))));
  });
  card.append(actionRow(button("All one person", { same: s.identity }, async () => {
    for (const face of s.groups.slice(1).flat()) {
      await post(`/v1/identities/${enc(s.identity)}/faces/${face}/confirm`, {});
    }
    await resolved(`${s.identity}'s photos are one person's: not listed again`);
  })));
  return card;
}

async function nameGroup(identity, faces) {
  const name = (prompt(`Who is in these ${faces.length} photos? A name enrolled or a new one:`) || "").trim();
  if (!name) return;
  for (const face of faces) {
    await post(`/v1/identities/${enc(identity)}/faces/${face}/move`, { identity: name, new: true });
  }
  await resolved(`${faces.length} faces moved from ${identity} to ${name}`);
}

// a face the last calibration left out as looking like someone enrolled: their photo (name it), or a stranger who
// resembles them (confirm it: the next calibration counts it, and strict targets are made of such faces)
function setAsideCard(f) {
  const card = photoCard(f.kept ? "kept-nearest" : "set-aside", (f.kept ? "kept from a search, not judged yet" :
    "left out of the calibration") + `: looks like ${f.like} (${f.score.toFixed(2)})`, f.face_id, `from ${f.source}`);
  card.append(personRow(f.like), actionRow(
    button(`It is ${f.like}`, { name: f.like }, () => nameAsideFace(f)),
    button("Nobody enrolled", { stranger: f.face_id }, async () => {
      await postOrAsk("/v1/gallery/strangers", { sources: [f.source] }, "Count it as a stranger anyway?");
      await resolved(`face ${f.face_id} counts as a stranger from the next calibration`);
    })));
  return card;
}

async function nameAsideFace(f) {
  await postOrAsk(`/v1/identities/${enc(f.like)}/name`, { face_ids: [f.face_id] }, `Name it ${f.like} anyway?`);
  await resolved(`face ${f.face_id} is now ${f.like}'s`);
}

// ... and the faces kept from searches nobody has judged, the most like someone enrolled first: the people a
// threshold missed are among them, to name before the rest are confirmed strangers
async function setAside() {
  const { gallery } = await json("/v1/calibration");
  const open = (list, kept) => (list || []).filter((f) => f.now === "unlabelled" && f.face_id)
    .map((f) => ({ ...f, kept }));
  return gallery ? [...open(gallery.strangers_set_aside, false), ...open(gallery.kept_nearest, true)] : [];
}

async function checkHealth() {
  const [report, aside] = await Promise.all([json("/v1/gallery/check"), setAside()]);
  const list = $("health-list");
  list.replaceChildren();
  for (const d of report.duplicates) list.append(duplicateCard(d));
  for (const m of report.misfits) list.append(misfitCard(m));
  for (const s of report.strays) list.append(strayCard(s));
  for (const s of report.splits) list.append(splitCard(s));
  for (const name of report.below_gate) {
    const card = findingCard("below-gate", `${name}: no face past the quality gate`);
    card.append(personRow(name));
    list.append(card);
  }
  for (const f of aside) list.append(setAsideCard(f));
  const n = report.duplicates.length + report.misfits.length + report.strays.length + report.splits.length +
    report.below_gate.length + aside.length;
  $("health-count").textContent = `(${n} ${n === 1 ? "finding" : "findings"} in ${report.identities} people` +
    (report.notes.length ? `; ${report.notes.join("; ")}` : "") + ")";
}

// the galleries this key reaches (and only those): ?gallery=NAME, else the service's default, else the first
async function loadGalleries() {
  const galleries = [];
  for (let cursor = ""; cursor !== null;) {  // every page: the list is one choice
    const page = await json(`/v1/galleries?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    galleries.push(...page.galleries);
    cursor = page.next_cursor;
  }
  const wanted = new URLSearchParams(location.search).get("gallery");
  const names = galleries.map((g) => g.name);
  state.gallery = names.includes(state.gallery) ? state.gallery
    : names.includes(wanted) ? wanted : (galleries.find((g) => g.default) || galleries[0] || {}).name || "";
  const select = $("gallery");
  select.replaceChildren(...galleries.map((g) => new Option(`${g.name} (${g.faces ?? "uncounted"} faces)`, g.name)));
  select.value = state.gallery;
  $("gallery-choice").hidden = galleries.length < 2;
  if (!state.gallery) throw new Error("this key reaches no gallery");
}

// what the page shows of a gallery, gone: on another gallery, and on another key (a key that fails must not leave
// the last key's people, clusters and findings on the screen)
function clearPage() {
  for (const id of ["search-result", "health-list", "cluster-list", "identity-list"]) $(id).replaceChildren();
  for (const id of ["health-count", "clusters-count", "identities-count"]) $(id).textContent = "";
  $("canvas").hidden = true;
  $("clusters-more").hidden = true;
  $("identities-more").hidden = true;
  state.clusterOffset = 0;
}

async function start() {
  if (!state.key) {
    say("enter an API key to begin");
    return;
  }
  try {
    state.galleriesKnown = loadGalleries();
    await state.galleriesKnown;
    await Promise.all([loadClusters(), loadIdentities()]);
    say("");
  } catch (error) {
    say(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = state.key;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("key").value.trim();
    sessionStorage.setItem("arcmatch-key", state.key);
    clearPage();
    start();
  });
  $("gallery").addEventListener("change", () => {  // another gallery: nothing of the last one stays on the page
    state.gallery = $("gallery").value;
    clearPage();
    start();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("probe").files[0]).catch((e) => say(e.message, true));
  });
  $("health-check").addEventListener("click", () => checkHealth().catch((e) => say(e.message, true)));
  $("identities-more").addEventListener("click", () => loadIdentities(true).catch((e) => say(e.message, true)));
  $("kept-strangers").addEventListener("click", () => keptStrangers().catch((e) => say(e.message, true)));
  $("clusters-more").addEventListener("click", () => {
    state.clusterOffset += PAGE;
    loadClusters(true).catch((e) => say(e.message, true));
  });
  start();
});
