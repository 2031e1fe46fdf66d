// orbitpost operators' dashboard: plain JS over the JSON API (/api/openapi.json).
// Every value from the server is inserted with textContent, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
let me = null;            // {operator, role, can_act, csrf_token}
let serverOffsetMs = 0;   // server clock − browser clock, so "N s ago" is right
let stream = null;
let pollTimer = null;
let refreshQueued = false;
// Ground ends a browser session after a while without use. The page's own polling must not
// count as use (an open, unattended dashboard would never end), so a request goes out marked
// "background" unless the operator has touched the page since the last one that was not.
let touchedSinceLastUse = true;
for (const ev of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"]) {
  document.addEventListener(ev, () => { touchedSinceLastUse = true; }, { capture: true, passive: true });
}

// ---------- helpers ----------
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const nowMs = () => Date.now() + serverOffsetMs;
function fmtTime(ms) {
  if (ms === null || ms === undefined) return "–";
  const d = new Date(ms);
  const sameDay = new Date(nowMs()).toDateString() === d.toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}
function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((nowMs() - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
function until(ms) {
  const s = Math.round((ms - nowMs()) / 1000);
  return s <= 0 ? "now" : s < 90 ? `in ${s} s` : `in ${Math.round(s / 60)} min`;
}
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}
const pct = (r) => (r === null || r === undefined ? "–" : `${(r * 100).toFixed(0)} %`);
const badge = (state, text) => el("span", { class: `badge st-${state}` }, text || state);
function toast(msg, bad = false) {
  const t = $("#toast");
  t.textContent = msg; t.className = `toast show${bad ? " bad" : ""}`;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => (t.className = "toast"), 4000);
}

async function api(path, opts = {}) {
  const headers = { Accept: "application/json", ...(opts.headers || {}) };
  if (opts.method && opts.method !== "GET" && me) headers["X-CSRF-Token"] = me.csrf_token;
  if (touchedSinceLastUse) touchedSinceLastUse = false; else headers["X-Orbitpost-Background"] = "1";
  const r = await fetch(path, { credentials: "same-origin", ...opts, headers });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (r.status === 401 && path !== "/api/login") {
    // An ended session (idle, expired) says why; tell the operator on the login form.
    showLogin(body && body.reason ? body.error : "");
    throw new Error("logged out");
  }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

// Re-rendering must not steal the keyboard focus: remember which control had it.
function keepFocus(render) {
  const key = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  render();
  if (key) {
    const again = document.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}
function fill(tbody, rows, emptyText, cols) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: cols, class: "muted" }, emptyText))]));
}

// ---------- actions ----------
async function act(path, doneMsg) {
  try {
    await api(path, { method: "POST" });
    toast(doneMsg);
    refresh();
  } catch (e) { toast(e.message, true); }
}
function confirmThen(text, fn) {
  const dlg = $("#confirm");
  $("#confirm-text").textContent = text;
  dlg.returnValue = "";
  dlg.addEventListener("close", () => { if (dlg.returnValue === "ok") fn(); }, { once: true });
  dlg.showModal();
}
function actionButton(label, key, ariaLabel, onclick, danger = false) {
  if (!me || !me.can_act) return null;
  return el("button", { type: "button", class: danger ? "danger" : null, "aria-label": ariaLabel, dataset: { key }, onclick }, label);
}

// ---------- renderers ----------
function renderSummary(s) {
  serverOffsetMs = s.now_ms - Date.now();
  const link = s.link;
  const c = $("#s-contact");
  c.textContent = link.last_contact_ms ? `${ago(link.last_contact_ms)} (${fmtTime(link.last_contact_ms)})` : "never";
  c.dataset.ms = link.last_contact_ms || "";
  c.classList.toggle("stale", link.seconds_since_contact === null || link.seconds_since_contact > 600);
  $("#s-bytes").textContent = bytes(link.bytes_today);
  $("#s-rate").textContent = link.bytes_per_s === null ? "–" : `${bytes(Math.round(link.bytes_per_s))}/s`;
  $("#stations").replaceChildren(...link.stations.map((st) => el("p", { class: "muted" },
    `Station ${st.station}: last heard ${ago(st.last_seen_ms)}${st.last_addr ? ` from ${st.last_addr}` : ""}, `
    + `${bytes(st.bytes_in)} in / ${bytes(st.bytes_out)} out over ${st.requests} requests`)));
  $("#s-queue").textContent = s.queue_depth;
  $("#s-scheduled").textContent = s.scheduled;
  $("#s-published").textContent = s.publications.published || 0;
  $("#s-failed").textContent = s.publications.failed || 0;
  $("#s-bundles").textContent = `${s.bundles_accepted} / ${s.bundles_rejected}`;
  const box = $("#active-transfers");
  box.replaceChildren(...link.active_transfers.map((t) => el("div", { class: "transfer" },
    `Receiving ${t.kind === "blob" ? "photo" : t.kind} from ${t.station} `, el("span", { class: "mono" }, t.transfer_id.split(":").pop().slice(0, 16)), " ",
    el("progress", { max: t.total_bytes || 1, value: t.received_bytes, "aria-label": `transfer ${t.transfer_id} progress` }),
    ` ${bytes(t.received_bytes)} of ${bytes(t.total_bytes)} · ${bytes(Math.round(t.bytes_per_s))}/s`)));
  if (!link.active_transfers.length) box.replaceChildren(el("p", { class: "muted" }, "No transfer in progress."));
}

function renderTransfers(d) {
  const rows = [];
  // In-progress uploads are in the Link strip; a completed bundle upload is listed as its bundle.
  const shown = d.transfers.filter((t) => t.state !== "receiving" && !(t.kind === "bundle" && t.state === "complete"));
  for (const t of shown) {
    rows.push(el("tr", {},
      el("td", { class: "time" }, fmtTime(t.updated_ms)),
      el("td", {}, badge(t.state === "complete" ? "verified" : t.state === "failed" ? "rejected" : "pending", `${t.kind === "blob" ? "photo" : t.kind} ${t.state}`)),
      el("td", { class: "mono" }, t.transfer_id.split(":").pop().slice(0, 16) + "…"), el("td", {}, t.source || t.station),
      el("td", { class: "num" }, `${bytes(t.received_bytes)} / ${bytes(t.total_bytes)}`),
      el("td", {}, t.state === "failed" ? el("span", { class: "reason" }, `[${t.code}] ${t.message}`) : pct(t.progress))));
  }
  for (const b of d.bundles) {
    rows.push(el("tr", {},
      el("td", { class: "time" }, fmtTime(b.received_ms)),
      el("td", {}, badge(b.status)),
      el("td", { class: "mono" }, b.bundle_id || b.sha256.slice(0, 16) + "…"),
      el("td", {}, b.source),
      el("td", { class: "num" }, bytes(b.size_bytes)),
      el("td", {}, b.status === "rejected" ? el("span", { class: "reason" }, `[${b.code}] ${b.message}`) : `${b.item_count} item(s)`)));
  }
  fill($("#bundles-table tbody"), rows, "Nothing received yet.", 6);
}

function pubLine(p, post) {
  const parts = [el("span", { class: "mono" }, p.account), " ", badge(p.display_state)];
  if (p.url) parts.push(" ", el("a", { href: p.url, target: "_blank", rel: "noopener noreferrer" }, "link"));
  if (p.display_state === "scheduled" && p.next_attempt_ms) parts.push(" ", el("span", { class: "muted" }, `publishes ${until(p.next_attempt_ms)}`));
  if (p.fidelity) parts.push(" ", el("span", { class: "muted", title: p.fidelity_note || "" }, `photos ${p.fidelity}`));
  for (const r of p.renditions || []) {
    parts.push(el("div", { class: "muted" }, `photo ${r.photo} sent as a rendition (${r.recipe}, ${r.source_width}×${r.source_height} → ` +
      `${r.width}×${r.height} JPEG, sha256 ${String(r.sha256).slice(0, 12)}…; signed original ${String(r.original_sha256).slice(0, 12)}…), allowed by the astronaut`));
  }
  if (p.last_error && p.state !== "published") parts.push(el("div", { class: "reason" }, p.last_error));
  if ((p.display_state === "retry-wait" || p.state === "publishing") && p.next_attempt_ms > nowMs()) parts.push(el("div", { class: "muted" }, `next retry ${until(p.next_attempt_ms)} (${fmtTime(p.next_attempt_ms)})`));
  if (p.attempts > 1) parts.push(" ", el("span", { class: "muted" }, `${p.attempts} attempts`));
  if ((p.display_state === "retry-wait" || p.state === "publishing" || p.state === "retracting") && p.attempts > 0 && p.next_attempt_ms > nowMs()) {
    const b = actionButton("Retry now", `retry-now:${post.id}:${p.account}`, `Retry post ${post.id} to ${p.account} now`,
      () => act(`/api/publications/${encodeURIComponent(post.id)}/${encodeURIComponent(p.account)}/retry-now`, `Retry of ${p.account} due now`));
    if (b) parts.push(" ", b);
  }
  if (p.state === "failed" || p.state === "retract_failed") {
    const b = actionButton("Retry", `retry:${post.id}:${p.account}`, `Retry post ${post.id} to ${p.account}`,
      () => act(`/api/publications/${encodeURIComponent(post.id)}/${encodeURIComponent(p.account)}/retry`, `Retry queued for ${p.account}`));
    if (b) parts.push(" ", b);
  }
  return el("li", { dataset: { state: p.state, account: p.account } }, parts);
}

function renderPosts(d) {
  const rows = d.posts.map((p) => el("tr", { dataset: { post: p.id } },
    el("td", { class: "time" }, fmtTime(p.received_ms)),
    el("td", {}, p.astronaut),
    el("td", {}, el("div", { class: "text" }, p.text_preview),
      el("div", { class: "muted" }, [p.media_count ? `${p.media_count} photo(s) · ` : "", el("span", { class: "mono" }, p.id)])),
    el("td", {}, el("ul", { class: "pubs" }, p.publications.map((x) => pubLine(x, p))))));
  fill($("#posts-table tbody"), rows, "No posts yet.", 4);
}

function renderSecurity(d) {
  const rows = d.events.map((e) => el("tr", {},
    el("td", { class: "time" }, fmtTime(e.ts_ms)),
    el("td", {}, badge(e.kind, e.code ? `${e.kind}: ${e.code}` : e.kind)),
    el("td", {}, e.message),
    el("td", { class: "mono" }, e.source)));
  fill($("#security-table tbody"), rows, "No security events.", 4);
}

function pauseButton(kind, name, paused) {
  const verb = paused ? "resume" : "pause";
  return actionButton(paused ? "Resume" : "Pause", `${verb}:${kind}:${name}`, `${paused ? "Resume" : "Pause"} ${kind} ${name}`,
    () => act(`/api/${kind === "platform" ? "platforms" : "accounts"}/${encodeURIComponent(name)}/${verb}`, `${name} ${paused ? "resumed" : "paused"}`));
}

function renderPlatforms(d) {
  const rows = [];
  for (const p of d.platforms) {
    rows.push(el("tr", {},
      el("th", { scope: "row" }, p.platform),
      el("td", {}, badge(p.paused ? "paused" : "active", p.paused ? "paused" : "active")),
      el("td", { class: "time" }, p.last_success_ms ? ago(p.last_success_ms) : "never"),
      el("td", { class: "num" }, `${p.published} / ${p.failed}`),
      el("td", { class: "num" }, pct(p.error_rate)),
      el("td", {}, pauseButton("platform", p.platform, p.paused))));
    for (const a of p.accounts) {
      rows.push(el("tr", {},
        el("td", { class: "mono" }, `  ${a.account}`, a.astronauts.length ? el("span", { class: "muted" }, ` (${a.astronauts.join(", ")})`) : null,
          a.token ? el("span", { class: a.token.includes("reconnect") ? "bad" : "muted" }, ` · token ${a.token}`) : null),
        el("td", {}, badge(a.paused ? "paused" : "active", a.paused ? "paused" : "active")),
        el("td", { class: "time" }, a.last_success_ms ? ago(a.last_success_ms) : "never"),
        el("td", { class: "num" }, `${a.by_state.published || 0} / ${a.by_state.failed || 0}`),
        el("td", { class: "num" }, pct(a.error_rate)),
        el("td", {}, a.astronauts.length ? pauseButton("account", a.account, a.paused) : null)));
    }
  }
  fill($("#platforms-table tbody"), rows, "No platforms in use.", 6);
}

function renderAstronauts(d) {
  const rows = []; const filter = $("#astronaut-filter"); const chosen = filter.value;
  filter.replaceChildren(el("option", { value: "" }, "all"), ...d.astronauts.map((a) => el("option", { value: a.name }, a.name)));
  filter.value = chosen;
  for (const a of d.astronauts) {
    for (const k of a.keys) {
      const revoked = k.revoked_ms !== null;
      rows.push(el("tr", {},
        el("td", {}, a.name), el("td", { class: "mono" }, k.fingerprint),
        el("td", { class: "time" }, fmtTime(k.enrolled_ms)),
        el("td", {}, revoked ? badge("revoked", `revoked ${fmtTime(k.revoked_ms)}`) : badge("active", "active")),
        el("td", {}, revoked ? null : actionButton("Revoke", `revoke:${k.fingerprint}`, `Revoke key ${k.fingerprint} of ${a.name}`,
          () => confirmThen(`Revoke ${a.name}'s key ${k.fingerprint}? Bundles signed with it will be rejected from now on.`,
            () => act(`/api/keys/${encodeURIComponent(k.fingerprint)}/revoke`, `Key ${k.fingerprint} revoked`)), true))));
    }
  }
  fill($("#astronauts-table tbody"), rows, "No astronauts enrolled.", 5);
}

function renderAudit(d) {
  const rows = d.events.map((e) => el("tr", { class: e.actor.startsWith("operator:") ? "op" : null },
    el("td", { class: "num" }, e.id), el("td", { class: "time" }, fmtTime(e.ts_ms)),
    el("td", { class: "mono" }, e.actor), el("td", {}, e.kind), el("td", { class: "text" }, e.detail)));
  fill($("#audit-table tbody"), rows, "Empty.", 5);
}

// ---------- refresh loop ----------
async function refresh() {
  if (!me) return;
  const astronaut = $("#astronaut-filter").value;
  const auditQ = $("#audit-operators").checked ? "&operators_only=1" : "";
  try {
    const [s, t, p, sec, pl, a, au] = await Promise.all([
      api("/api/summary"), api("/api/transfers?limit=30"),
      api(`/api/posts?limit=100${astronaut ? `&astronaut=${encodeURIComponent(astronaut)}` : ""}`),
      api("/api/security?limit=50"), api("/api/platforms"), api("/api/astronauts"), api(`/api/audit?limit=100${auditQ}`),
    ]);
    keepFocus(() => {
      renderSummary(s); renderTransfers(t); renderPosts(p); renderSecurity(sec);
      renderPlatforms(pl); renderAstronauts(a); renderAudit(au);
    });
    document.body.dataset.refreshed = String(Date.now());
  } catch (e) {
    if (e.message !== "logged out") toast(`refresh failed: ${e.message}`, true);
  }
}
function queueRefresh() {
  if (refreshQueued) return;
  refreshQueued = true;
  setTimeout(() => { refreshQueued = false; refresh(); }, 250);
}
function startLive() {
  stopLive();
  if (window.EventSource) {
    stream = new EventSource("/api/stream");
    stream.addEventListener("change", queueRefresh);
    stream.addEventListener("logout", (ev) => {
      let why = "";
      try { why = JSON.parse(ev.data).error || ""; } catch (_) { why = ""; }
      showLogin(why);
    });
    stream.onopen = () => $("#live").classList.remove("off");
    stream.onerror = () => $("#live").classList.add("off");
  }
  // Polling as well: keeps "N s ago" honest and covers a proxy that buffers the stream.
  pollTimer = setInterval(refresh, 10000);
}
function stopLive() {
  if (stream) { stream.close(); stream = null; }
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
}

// ---------- login ----------
function showLogin(message = "") {
  me = null; stopLive();
  $("#login-error").textContent = message;
  $("#main").hidden = true; $("#who").hidden = true; $("#login").hidden = false;
  $("#login-name").focus();
}
function showDashboard() {
  $("#login").hidden = true; $("#main").hidden = false; $("#who").hidden = false;
  $("#who-name").textContent = me.operator;
  $("#who-role").textContent = me.role;
  startLive(); refresh();
}
$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    me = await api("/api/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: $("#login-name").value, password: $("#login-password").value }),
    });
    $("#login-password").value = "";
    showDashboard();
    $("#main").focus({ preventScroll: true });
  } catch (e) { me = null; $("#login-error").textContent = e.message; }
});
$("#logout").addEventListener("click", async () => {
  try { await api("/api/logout", { method: "POST" }); } catch (_) { /* already gone */ }
  showLogin();
});
$("#astronaut-filter").addEventListener("change", refresh);
$("#audit-operators").addEventListener("change", refresh);

(async () => {
  try {
    const r = await fetch("/api/me", { credentials: "same-origin" });
    if (r.ok) { me = await r.json(); showDashboard(); return; }
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    showLogin(body && body.reason ? body.error : "");
  } catch (_) { showLogin(); }
})();
