// The compose page. No framework, no build step. Every piece of user text is inserted with
// textContent (never innerHTML). Counters and refusals come from the server, which runs
// protocol/rules.py: this file holds no copy of any platform rule.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = "";
let etag = "";
let st = null; // the last /api/state
let draft = null; // the open draft (as the server last saved it)
let saveTimer = null;
let saving = Promise.resolve();
let lastInput = Date.now();

function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) if (k) e.append(k);
  return e;
}

function say(msg, isError = false) {
  const m = $("message");
  m.textContent = msg;
  m.className = isError ? "error" : "";
}

async function api(method, path, body, background = false) {
  const headers = { "X-CSRF-Token": csrf };
  if (background) headers["X-Onboard-Background"] = "1";
  const opts = { method, headers, keepalive: method !== "GET" && !(body instanceof FormData) };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let j = {};
  try { j = await r.json(); } catch (e) { j = {}; }
  if (r.status === 401) {
    say("This page needs the address `onboard ui` printed (it carries this start's secret).", true);
    throw new Error("no session");
  }
  if (!r.ok) throw new Error(j.error || `HTTP ${r.status}`);
  return j;
}

const fmtBytes = (n) => n == null ? "?" : n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(2)} MB`;
const fmtTime = (ms) => ms ? new Date(ms).toISOString().slice(0, 16).replace("T", " ") + "Z" : "";
function fmtDuration(s) {
  if (s == null) return "";
  if (s < 90) return `${Math.ceil(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
function ago(ms) { return ms ? fmtDuration((Date.now() - ms) / 1000) + " ago" : "never"; }

// ---- state polling --------------------------------------------------------------------

async function refresh(background = true) {
  const headers = { "X-Onboard-Background": background ? "1" : "0" };
  if (etag) headers["If-None-Match"] = etag;
  const r = await fetch("/api/state", { headers });
  if (r.status === 304) return;
  if (r.status === 401) { say("This page needs the address `onboard ui` printed (it carries this start's secret).", true); return; }
  if (!r.ok) return;
  etag = r.headers.get("ETag") || "";
  st = await r.json();
  csrf = st.csrf;
  render();
}

function render() {
  renderWho();
  renderLink();
  renderAccounts();
  renderDrafts();
  renderItems();
}

function current() { return st && st.astronauts.find((a) => a.name === st.selected); }

function renderWho() {
  const sel = $("astronaut");
  if (document.activeElement !== sel) {
    sel.replaceChildren(...st.astronauts.map((a) => el("option", { value: a.name, text: a.name + (a.protected ? "" : " (no passphrase)") })));
    if (st.selected) sel.value = st.selected;
  }
  const a = current();
  const ks = $("key-state");
  const form = $("unlock-form");
  if (!a) { ks.textContent = st.astronauts.length ? "choose who is posting" : "no identity here: run `onboard keys new NAME --passphrase`"; form.hidden = true; $("lock-btn").hidden = true; return; }
  $("unlock-name").textContent = a.name;
  if (!a.protected) {
    ks.textContent = `${a.name}'s key has no passphrase: anyone at this laptop can post as ${a.name} (onboard keys protect ${a.name})`;
    ks.className = "open";
    form.hidden = true;
    $("lock-btn").hidden = true;
  } else if (a.unlocked) {
    ks.textContent = `unlocked: ${a.name} may sign (locks when idle)`;
    ks.className = "";
    form.hidden = true;
    $("lock-btn").hidden = false;
  } else {
    ks.textContent = "locked" + (st.locked_reason ? ` (${st.locked_reason})` : "");
    ks.className = "";
    form.hidden = false;
    $("lock-btn").hidden = true;
  }
}

function renderLink() {
  const l = st.link;
  const badge = $("link-state");
  let state = "unknown", detail = "";
  if (!l.configured) { detail = "no link set up (onboard link add); posts wait here"; }
  else if (l.up === null) { detail = "no sync has run yet (onboard sync --watch)"; }
  else { state = l.up ? "up" : "down"; detail = l.up ? "" : (l.reason ? `(${l.reason}) ` : ""); }
  badge.textContent = "link " + state;
  badge.className = "badge " + state;
  const parts = [detail.trim()];
  if (l.configured) parts.push(`last contact with ground ${ago(l.last_contact_ms)}`);
  if (l.seen_ms) parts.push(`as onboard sync saw it ${ago(l.seen_ms)}`);
  parts.push(`${fmtBytes(l.bytes_waiting)} waiting`);
  if (l.bytes_waiting && l.eta_s != null) parts.push(`about ${fmtDuration(l.eta_s)} at ${(l.rate_bps * 8 / 1000).toFixed(1)} kbit/s measured`);
  else if (l.bytes_waiting) parts.push("rate not measured yet");
  $("link-detail").textContent = parts.filter(Boolean).join(" · ");
}

function renderAccounts() {
  if (!draft) return;
  const list = $("account-list");
  const names = [...new Set([...(st.accounts || []), ...draft.targets])];
  const focused = document.activeElement && document.activeElement.dataset.account;
  list.replaceChildren(...names.map((t) => {
    const box = el("input", { type: "checkbox", checked: draft.targets.includes(t), "data-account": t });
    box.addEventListener("change", () => {
      const set = new Set(draft.targets);
      if (box.checked) set.add(t); else set.delete(t);
      draft.targets = names.filter((n) => set.has(n));
      draft.renditions = (draft.renditions || []).filter((r) => set.has(r));
      renderAccounts();
      changed();
    });
    // Signed consent for this account only: ground may publish a rendition (rendition/v1) of a
    // photo over its limits instead of refusing the post there (docs/platforms.md).
    const allow = el("input", { type: "checkbox", checked: (draft.renditions || []).includes(t), "data-rendition": t });
    allow.disabled = !draft.targets.includes(t);
    allow.addEventListener("change", () => {
      const set = new Set(draft.renditions || []);
      if (allow.checked) set.add(t); else set.delete(t);
      draft.renditions = names.filter((n) => set.has(n));
      changed();
    });
    return el("span", { class: "account" }, el("label", {}, box, " " + t),
      el("label", { class: "rendition", title: "If a photo is over this account's limits, let ground publish a JPEG rendition of it there (recorded with both hashes) instead of refusing the post" }, allow, " allow a rendition"));
  }));
  if (focused) { const b = list.querySelector(`input[data-account="${CSS.escape(focused)}"]`); if (b) b.focus(); }
  $("accounts-note").textContent = st.accounts_confirmed
    ? "accounts ground has enrolled for you"
    : (st.accounts.length ? "from your past posts and ground's receipts — not confirmed by ground yet" : "ground has not confirmed any account yet: add the ones you were given");
}

function renderDrafts() {
  const ul = $("drafts");
  const others = st.drafts.filter((d) => !draft || d.id !== draft.id);
  ul.replaceChildren(...others.map((d) => {
    const b = el("button", { type: "button", text: "Open", "data-draft": d.id });
    b.addEventListener("click", () => openDraft(d.id));
    const what = (d.text || "(no text)").slice(0, 80) + (d.photos ? ` [${d.photos} photo(s)]` : "");
    return el("li", {}, el("span", { text: `${fmtTime(d.updated_ms)} ${d.author || ""}: ${what} ` }), b);
  }));
  if (!others.length) ul.replaceChildren(el("li", { class: "note", text: "no other drafts" }));
}

const FINAL = ["published", "failed", "cancelled", "retracted", "retract_failed"];

function renderItems() {
  const q = $("search").value.trim().toLowerCase();
  const items = st.queue.filter((it) => !q || [it.id, it.author, it.text, ...it.accounts.map((a) => a.target), ...it.photos.map((p) => p.alt)].join("\n").toLowerCase().includes(q));
  const focusKey = document.activeElement && document.activeElement.dataset.focus;
  $("items").replaceChildren(...items.map(renderItem));
  if (!items.length) $("items").replaceChildren(el("li", { class: "note", text: q ? "nothing matches" : "nothing queued yet" }));
  if (focusKey) { const b = document.querySelector(`[data-focus="${CSS.escape(focusKey)}"]`); if (b) b.focus(); }
}

function renderItem(it) {
  const meta = `${it.id} · ${it.author} · written ${fmtTime(it.created_ms)}` + (it.publish_at_ms ? ` · scheduled for ${fmtTime(it.publish_at_ms)}` : "");
  const li = el("li", { "data-post": it.id, "data-status": it.status }, el("div", { class: "meta", text: meta }), el("p", { class: "text", text: it.text }));
  if (it.photos.length) li.append(el("p", { class: "meta", text: `${it.photos.length} photo(s): ` + it.photos.map((p, i) => `${i + 1}. ${p.alt || "(no alt text)"}`).join("  ") }));
  const ul = el("ul", { class: "accounts" });
  for (const a of it.accounts) {
    const row = el("li", { "data-account": a.target, "data-state": a.state }, el("span", { text: a.target + " " }), el("span", { class: "badge " + a.state.split(" ")[0], text: a.label }));
    if (a.url) row.append(" ", el("a", { href: a.url, text: a.url, target: "_blank", rel: "noopener noreferrer" }));
    else if (a.where) row.append(" ", el("span", { class: "meta", text: a.where }));
    if (a.reason) row.append(" ", el("span", { class: "reason", text: a.reason }));
    if (a.fidelity) row.append(" ", el("span", { class: "fidelity", title: a.read_back || "", text: a.fidelity }));
    if (a.hint) row.append(el("span", { class: "hint", text: "What to do: " + a.hint }));
    ul.append(row);
  }
  li.append(ul);
  if (it.fidelity) li.append(el("p", { class: "meta fidelity", "data-fidelity": "", text: "Photos, as ground published them: " + it.fidelity }));
  for (const c of it.commands) li.append(el("p", { class: "meta", text: `${c.kind} ${c.id}: ${c.status === "queued" ? "waiting for the next sync" : c.status}` }));
  const acts = el("div", { class: "actions" });
  const kinds = new Set(it.commands.map((c) => c.kind));
  const open = it.accounts.filter((a) => !FINAL.includes(a.state));
  const published = it.accounts.filter((a) => a.state === "published");
  if (open.length && !kinds.has("cancel")) acts.append(actionButton("cancel", it, open, published));
  if (published.length && !kinds.has("retract")) acts.append(actionButton("retract", it, open, published));
  if (acts.childNodes.length) li.append(acts);
  return li;
}

function actionButton(kind, it, open, published) {
  const b = el("button", { type: "button", text: kind === "cancel" ? "Cancel…" : "Retract…", "data-focus": `${kind}-${it.id}`, class: kind });
  b.addEventListener("click", async () => {
    const rows = kind === "cancel"
      ? [...open.map((a) => `${a.target}: will not be published`), ...published.map((a) => `${a.target}: already published, stays (retract it to delete it)`)]
      : [...published.map((a) => `${a.target}: the published post will be deleted`), ...open.map((a) => `${a.target}: not published yet (cancel it instead)`)];
    const ok = await confirmAction(
      kind === "cancel" ? `Cancel this post by ${it.author}?` : `Retract this post by ${it.author}?`,
      rows,
      `A ${kind} signed by ${it.author} leaves with the next sync; ground applies it ${kind === "cancel" ? "if the post is not yet published" : "on every account above"}.`,
      kind === "cancel" ? "Cancel the post" : "Retract the post",
      false,
    );
    if (!ok) return;
    try {
      const r = await api("POST", `/api/items/${encodeURIComponent(it.id)}/${kind}`);
      say(`${kind} ${r.queued} queued: it leaves with the next sync`);
      await refresh(false);
    } catch (e) { say(e.message, true); }
  });
  return b;
}

function confirmAction(title, rows, note, okText, focusOk) {
  const d = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-list").replaceChildren(...rows.map((r) => el("li", { text: r })));
  $("confirm-note").textContent = note;
  $("confirm-ok").textContent = okText;
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.returnValue = "";
    d.showModal();
    (focusOk ? $("confirm-ok") : $("confirm-no")).focus();
  });
}

// ---- the draft ----------------------------------------------------------------------------

function showDraft(d) {
  draft = d;
  $("text").value = d.text;
  $("publish-at").value = d.publish_at || "";
  renderPhotos();
  renderCheck();
  if (st) { renderAccounts(); renderDrafts(); }
}

function renderPhotos() {
  const ol = $("photo-list");
  ol.replaceChildren(...draft.photos.map((p, i) => {
    const img = p.thumb ? el("img", { src: `/api/photos/${p.sha}/thumb`, alt: p.alt || "" }) : el("div", { class: "meta", text: p.media_type || "?" });
    const alt = el("textarea", { value: p.alt || "", placeholder: "Describe the photo for people who cannot see it", "data-photo-alt": String(i), "aria-label": `Alt text for photo ${i + 1}` });
    alt.value = p.alt || "";
    alt.addEventListener("input", () => { draft.photos[i].alt = alt.value; changed(); });
    const wire = p.missing ? "no longer on this laptop" : `${fmtBytes(p.size_bytes)} ${(p.media_type || "").replace("image/", "").toUpperCase()} · ${fmtBytes(p.wire_bytes)} on the wire (${p.wire_codec})`;
    const up = el("button", { type: "button", text: "↑", "aria-label": `Move photo ${i + 1} up`, disabled: i === 0 });
    const down = el("button", { type: "button", text: "↓", "aria-label": `Move photo ${i + 1} down`, disabled: i === draft.photos.length - 1 });
    const rm = el("button", { type: "button", text: "Remove", "aria-label": `Remove photo ${i + 1}` });
    up.addEventListener("click", () => movePhoto(i, -1));
    down.addEventListener("click", () => movePhoto(i, 1));
    rm.addEventListener("click", () => { draft.photos.splice(i, 1); renderPhotos(); changed(); });
    return el("li", { "data-sha": p.sha }, img, el("div", {}, el("div", { class: "meta", text: `${i + 1}. ${p.name || "photo"} — ${wire}` }), alt, el("div", { class: "actions" }, up, down, rm)));
  }));
}

function movePhoto(i, by) {
  const j = i + by;
  if (j < 0 || j >= draft.photos.length) return;
  [draft.photos[i], draft.photos[j]] = [draft.photos[j], draft.photos[i]];
  renderPhotos();
  changed();
}

function renderCheck() {
  const c = draft.check;
  $("counters").replaceChildren(...c.targets.map((t) => {
    const li = el("li", { "data-target": t.target, class: t.ok ? "ok" : "over" });
    li.append(el("span", { text: t.target + " " }));
    if (t.limits && t.limits.max_text != null) li.append(el("span", { class: "count", text: `${t.count} / ${t.limits.max_text} ${t.limits.unit}` }));
    else if (t.limits) li.append(el("span", { class: "limits", text: "no length limit" }));
    else if (t.ok) li.append(el("span", { class: "limits", text: "no limits known on this laptop: ground checks them" }));
    if (t.limits) {
      const L = t.limits;
      const img = [L.max_media != null ? `up to ${L.max_media} photos` : "", L.max_media_bytes != null ? `${fmtBytes(L.max_media_bytes)} each` : "", L.media_types ? L.media_types.join("/") : ""].filter(Boolean).join(", ");
      if (img) li.append(el("span", { class: "limits", text: " · " + img + (t.learned ? " (limits from ground)" : "") }));
      if (t.photo_fidelity) li.append(el("span", { class: "limits", text: " · " + t.photo_fidelity }));
    }
    for (const p of t.problems) li.append(el("div", { class: "why", text: "✗ " + p }));
    return li;
  }));
  $("problems").replaceChildren(...c.problems.map((p) => el("li", { text: p })));
  $("warnings").replaceChildren(...c.warnings.map((p) => el("li", { text: "⚠ " + p })));
  $("queue-btn").classList.toggle("blocked", !c.ok); // still clickable: a click says why
}

function collect() {
  draft.text = $("text").value;
  draft.publish_at = $("publish-at").value;
  draft.author = st && st.selected ? st.selected : draft.author;
  return { author: draft.author, text: draft.text, targets: draft.targets, renditions: (draft.renditions || []).filter((r) => draft.targets.includes(r)), publish_at: draft.publish_at, photos: draft.photos.map((p) => ({ sha: p.sha, alt: p.alt || "", name: p.name || "" })) };
}

function changed() {
  lastInput = Date.now();
  $("draft-saved").textContent = "saving…";
  clearTimeout(saveTimer);
  saveTimer = setTimeout(save, 250);
}

function save() {
  clearTimeout(saveTimer);
  saveTimer = null;
  if (!draft) return saving;
  const body = collect();
  const id = draft.id;
  saving = saving.then(async () => {
    try {
      const d = await api("PUT", `/api/drafts/${id}`, body);
      if (draft && draft.id === id) {
        draft.check = d.check;
        renderCheck();
        $("draft-saved").textContent = "draft saved";
      }
    } catch (e) { $("draft-saved").textContent = "not saved: " + e.message; }
  });
  return saving;
}

const isEmpty = (d) => d && !d.text && !d.photos.length && !d.targets.length && !d.publish_at;

async function openDraft(id) {
  if (saveTimer) await save();
  if (isEmpty(draft)) await api("DELETE", `/api/drafts/${draft.id}`); // nothing worth keeping
  showDraft(await api("GET", `/api/drafts/${id}`));
  $("text").focus();
}

async function newDraft() {
  if (saveTimer) await save();
  if (isEmpty(draft)) { $("text").focus(); return; } // already a blank one
  showDraft(await api("POST", "/api/drafts"));
  $("text").focus();
}

async function addPhotos(files) {
  if (!files.length) return;
  if (saveTimer) await save();
  const fd = new FormData();
  for (const f of files) fd.append("photo", f, f.name);
  say(`adding ${files.length} photo(s): making thumbnails and measuring them for the link…`);
  try {
    const d = await api("POST", `/api/drafts/${draft.id}/photos`, fd);
    draft.photos = d.photos;
    draft.check = d.check;
    renderPhotos();
    renderCheck();
    save(); // an autosave that crossed the upload must not leave the photos out on disk
    say(`${files.length} photo(s) added — write alt text for each`);
  } catch (e) { say(e.message, true); }
}

async function queuePost() {
  await save();
  const c = draft.check;
  if (!c.ok) {
    const why = [...c.problems, ...c.targets.flatMap((t) => t.problems.map((p) => `${t.target}: ${p}`))];
    say("Not queued: " + why.join("; "), true);
    return;
  }
  const when = draft.publish_at ? `at ${draft.publish_at.replace("T", " ")}Z` : "as soon as ground has it";
  const rendered = new Set(draft.renditions || []);
  const rows = draft.targets.map((t) => `${t}: published ${when}, ` +
    (rendered.has(t) ? "unchanged, or a rendition of a photo over its limits (you allowed it)" : "unchanged"));
  if (draft.photos.length) rows.push(`${draft.photos.length} photo(s), ${fmtBytes(draft.photos.reduce((n, p) => n + (p.wire_bytes || 0), 0))} on the wire`);
  const ok = await confirmAction(`Sign and queue this post as ${draft.author}?`, rows, "It leaves with the next sync; you can cancel it until it is published.", draft.publish_at ? "Schedule the post" : "Queue the post", true);
  if (!ok) return;
  try {
    const r = await api("POST", `/api/drafts/${draft.id}/queue`);
    say(`queued ${r.queued} for ${r.targets.join(", ")}`);
    draft = null;
    await refresh(false);
    await newDraft();
  } catch (e) { say("Not queued: " + e.message, true); }
}

// ---- wiring -------------------------------------------------------------------------------

async function boot() {
  await refresh(false);
  if (!st) return;
  if (!st.selected && st.astronauts.length) {
    await api("POST", "/api/select", { astronaut: st.astronauts[0].name });
    await refresh(false);
  }
  const mine = st.drafts.find((d) => d.author === st.selected) || st.drafts[0];
  if (mine) showDraft(await api("GET", `/api/drafts/${mine.id}`));
  else showDraft(await api("POST", "/api/drafts"));
  $("text").focus();
  setInterval(() => refresh(true).catch(() => {}), 2000);
}

$("text").addEventListener("input", changed);
$("publish-at").addEventListener("input", changed);
$("astronaut").addEventListener("change", async () => {
  try {
    await api("POST", "/api/select", { astronaut: $("astronaut").value });
    await refresh(false);
    if (draft) changed();
    if (!$("unlock-form").hidden) $("passphrase").focus();
  } catch (e) { say(e.message, true); }
});
$("unlock-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const pw = $("passphrase");
  try {
    await api("POST", "/api/unlock", { astronaut: st.selected, passphrase: pw.value });
    say(`${st.selected} unlocked`);
    await refresh(false);
    $("text").focus();
  } catch (e) { say(e.message, true); }
  pw.value = "";
});
$("lock-btn").addEventListener("click", async () => { await api("POST", "/api/lock"); await refresh(false); });
$("add-account").addEventListener("click", addAccount);
$("new-account").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); addAccount(); } });
function addAccount() {
  const v = $("new-account").value.trim();
  if (!v || !draft) return;
  if (!draft.targets.includes(v)) draft.targets.push(v);
  $("new-account").value = "";
  if (st) renderAccounts();
  changed();
}
$("photo-input").addEventListener("change", async (ev) => { await addPhotos([...ev.target.files]); ev.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); addPhotos([...ev.dataTransfer.files]); });
$("queue-btn").addEventListener("click", queuePost);
$("new-draft").addEventListener("click", newDraft);
$("discard-btn").addEventListener("click", async () => {
  const ok = await confirmAction("Discard this draft?", [($("text").value || "(no text)").slice(0, 120)], "Nothing has been sent; the draft and its photos are deleted from this laptop.", "Discard", false);
  if (!ok) return;
  clearTimeout(saveTimer);
  saveTimer = null;
  await api("DELETE", `/api/drafts/${draft.id}`);
  draft = null;
  await refresh(false);
  await newDraft();
});
$("search").addEventListener("input", () => st && renderItems());
document.addEventListener("keydown", (ev) => {
  if ($("confirm").open) return; // the dialog has the keyboard
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") { ev.preventDefault(); queuePost(); }
  else if (ev.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) { ev.preventDefault(); $("search").focus(); }
});
// A closing tab flushes the pending autosave (keepalive fetch outlives the page).
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden" && saveTimer) save(); });
window.addEventListener("pagehide", () => { if (saveTimer) save(); });
boot().catch((e) => say(e.message, true));
