// The proof page's checks, run in the reader's browser (docs/TRANSPARENCY.md).
// Every value shown comes from the signed bytes this script decodes itself; user text is only
// ever inserted with textContent. Hashing and Ed25519 use WebCrypto; the Merkle inclusion
// check is RFC 9162 §2.1.3.2, the log's tree hashing.
"use strict";

const enc = new TextEncoder();
const $ = (id) => document.getElementById(id);

function b64(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}
const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }

async function ed25519Verify(publicKey, signature, message) {
  let key;
  try {
    key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    throw new Error("this browser cannot check Ed25519 signatures; run orbitpost-verify instead");
  }
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

function publicKeyBytes(line) {
  if (!line.startsWith("ed25519:")) throw new Error("not an ed25519 key: " + line);
  const raw = b64(line.slice(8));
  if (raw.length !== 32) throw new Error("an Ed25519 public key is 32 bytes");
  return raw;
}

// The subset of msgpack an item body uses (docs/PROTOCOL.md §3).
function unpack(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const take = (n) => { if (at + n > bytes.length) throw new Error("body is truncated"); const s = bytes.subarray(at, at + n); at += n; return s; };
  const u = (n) => { const s = take(n); let v = 0; for (const b of s) v = v * 256 + b; return v; };
  const str = (n) => new TextDecoder("utf-8", { fatal: true }).decode(take(n));
  const arr = (n) => { const out = []; for (let i = 0; i < n; i++) out.push(next()); return out; };
  function next() {
    const t = bytes[at++];
    if (t === undefined) throw new Error("body is truncated");
    if (t <= 0x7f) return t;
    if (t >= 0x90 && t <= 0x9f) return arr(t & 0x0f);
    if (t >= 0xa0 && t <= 0xbf) return str(t & 0x1f);
    if (t >= 0xe0) return t - 256;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return take(u(1)).slice();
      case 0xc5: return take(u(2)).slice();
      case 0xc6: return take(u(4)).slice();
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: return u(8);
      case 0xd0: return view.getInt8(take(1).byteOffset - bytes.byteOffset);
      case 0xd1: { const s = take(2); return new DataView(s.buffer, s.byteOffset).getInt16(0); }
      case 0xd2: { const s = take(4); return new DataView(s.buffer, s.byteOffset).getInt32(0); }
      case 0xd3: { const s = take(8); return Number(new DataView(s.buffer, s.byteOffset).getBigInt64(0)); }
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return arr(u(2));
      case 0xdd: return arr(u(4));
      default: throw new Error("unexpected msgpack byte 0x" + t.toString(16));
    }
  }
  const value = next();
  if (at !== bytes.length) throw new Error("trailing bytes after the body");
  return value;
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
function ulid(bytes) {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  let out = "";
  for (let i = 0; i < 26; i++) { out = CROCKFORD[Number(n & 31n)] + out; n >>= 5n; }
  return out;
}

// RFC 9162 §2.1.3.2: recompute the root from a leaf and its audit path.
async function rootFromInclusion(leafHash, index, size, path) {
  let fn = index - 1, sn = size - 1, r = leafHash;
  const node = async (a, b) => sha256(concat(Uint8Array.of(1), a, b));
  for (const p of path) {
    if (sn === 0) throw new Error("inclusion proof is too long");
    if (fn % 2 === 1 || fn === sn) {
      r = await node(p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await node(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("inclusion proof is too short");
  return r;
}

function parseNote(note) {
  const [body, sigs] = note.split("\n\n");
  const lines = body.split("\n");
  if (lines.length !== 4 || !lines[3].startsWith("time ")) throw new Error("malformed checkpoint");
  return {
    text: body + "\n", origin: lines[0], size: Number(lines[1]), root: b64(lines[2]),
    timeMs: Number(lines[3].slice(5)),
    signatures: sigs.trim().split("\n").map((l) => l.split(" ")).map(([, name, sig]) => ({ name, raw: b64(sig) })),
  };
}

class Checks {
  constructor() { this.failed = []; }
  // `text` says what holds; `failed` what it means when it does not.
  add(ok, text, failed = "check failed: " + text) {
    const li = document.createElement("li");
    li.className = ok === null ? "note" : ok ? "ok" : "bad";
    text = ok === false ? failed : text;
    li.textContent = text;
    $("checks").append(li);
    if (ok === false) this.failed.push(text);
    return ok;
  }
}

async function checkLeaf(checks, leaf, cp, what, expect) {
  const fail = (message) => checks.add(false, message, message);
  if (!leaf) return fail(`${what}: not in the log checkpoint`);
  const entry = JSON.parse(leaf.entry);
  for (const [k, v] of Object.entries(expect)) {
    if (entry[k] !== v) return fail(`${what}: the log says ${k} = ${JSON.stringify(entry[k])}, not ${JSON.stringify(v)}`);
  }
  const leafHash = await sha256(concat(Uint8Array.of(0), enc.encode(leaf.entry)));
  if (!equal(unhex(leaf.inclusion.path[0] || ""), leafHash)) return fail(`${what}: inclusion proof is for another leaf`);
  const root = await rootFromInclusion(leafHash, leaf.index, cp.size, leaf.inclusion.path.slice(1).map(unhex));
  return checks.add(equal(root, cp.root), `${what} is leaf ${leaf.index} of the log (${cp.size} leaves)`,
    `${what}: inclusion proof does not lead to the checkpoint's root`);
}

function showPost(item, proof) {
  $("astronaut").textContent = item.author;
  $("fingerprint").textContent = proof.key_id;
  $("created").textContent = new Date(item.created_ms).toISOString();
  $("text").textContent = item.text;
  for (const m of item.media) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = `/p/${encodeURIComponent(proof.item_id)}/media/${hex(m.sha256)}`;
    img.alt = m.alt;
    const cap = document.createElement("figcaption");
    cap.textContent = (m.alt ? `alt: ${m.alt} · ` : "no alt text · ") + `sha256 ${hex(m.sha256).slice(0, 16)}…`;
    fig.append(img, cap);
    $("photos").append(fig);
  }
}

function showPublication(p) {
  const tr = document.createElement("tr");
  const link = document.createElement("a");
  if (p.url && /^https?:|^file:/.test(p.url)) link.href = p.url;
  link.textContent = p.url || "—";
  let photos = p.media_fidelity === "exact" ? "exact bytes" : "re-encoded by the platform";
  // A rendition the astronaut's signed post allowed: say so, with both hashes (never silently).
  for (const r of p.renditions || []) {
    photos += `; photo ${r.photo} sent as a rendition (${r.recipe}, ${r.source_width}×${r.source_height} → ` +
      `${r.width}×${r.height} JPEG, sha256 ${String(r.sha256).slice(0, 16)}…; signed original ` +
      `${String(r.original_sha256).slice(0, 16)}…), allowed in the signed post`;
  }
  const cells = [p.account, link, p.text_fidelity, photos,
    p.published_ms ? new Date(p.published_ms).toISOString() : p.state];
  for (const c of cells) {
    const td = document.createElement("td");
    if (typeof c === "string") td.textContent = c; else td.append(c);
    tr.append(td);
  }
  $("publications").querySelector("tbody").append(tr);
}

async function verify(proof) {
  const checks = new Checks();
  const body = b64(proof.body), sig = b64(proof.signature);
  const pk = publicKeyBytes(proof.public_key);
  const groundKey = publicKeyBytes(proof.ground_key);
  $("ground-key").textContent = proof.ground_key;
  $("origin").textContent = proof.origin;
  $("checkpoint").textContent = proof.checkpoint;

  // 1. The body: decode it here, and show what it says (not what the server says).
  const v = unpack(body);
  // Version 1, or version 2: a post whose field 9 lists the accounts where the astronaut allows
  // a rendition (docs/PROTOCOL.md §3.1).
  const fields = { 1: 9, 2: 10 }[Array.isArray(v) ? v[0] : 0];
  if (!fields || v[1] !== 1 || v.length !== fields) throw new Error("not a version-1 or version-2 post body");
  const item = { id: ulid(v[2]), author: v[3], created_ms: v[4], text: v[5],
    media: v[6].map(([sha256, size, type, alt]) => ({ sha256, size, type, alt })),
    renditions: v[0] === 2 ? v[9] : [] };
  showPost(item, proof);
  // Shown exactly as signed; invisible direction and zero-width controls are counted aloud,
  // so a reversed or hidden word cannot pass unnoticed.
  const hidden = (item.text.match(/[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g) || []).length;
  if (hidden) checks.add(null, `the text contains ${hidden} invisible direction or zero-width control character(s), shown as signed`);
  checks.add(item.id === proof.item_id, `the signed body is post ${item.id}`,
    `the signed body is post ${item.id}, not ${proof.item_id}`);

  // 2. The astronaut's signature over it.
  const bodyHash = await sha256(body);
  checks.add(equal((await sha256(pk)).slice(0, 8), unhex(proof.key_id)), `key ${proof.key_id} is ${proof.public_key}`,
    `key id ${proof.key_id} does not name ${proof.public_key}`);
  let message = concat(enc.encode("orbitpost/item/v1\0"), body);
  if (proof.statement) {
    const st = b64(proof.statement);
    let listed = false;
    for (let i = 0; i + 32 <= st.length; i += 32) listed = listed || equal(st.subarray(i, i + 32), bodyHash);
    checks.add(listed, "the signed batch statement lists this body's SHA-256",
      "the astronaut's signature does not cover this body: its SHA-256 is not in the signed statement");
    message = concat(enc.encode("orbitpost/batch/v1\0"), st);
  }
  checks.add(await ed25519Verify(pk, sig, message), `${item.author}'s Ed25519 signature is valid`,
    `${item.author}'s Ed25519 signature is INVALID for these bytes`);

  // 3. Ground's signed checkpoint, and the post, key and outcomes in it.
  const cp = parseNote(proof.checkpoint);
  const ours = cp.signatures.find((s) => s.name === proof.origin);
  const kh = (await sha256(concat(enc.encode(proof.origin + "\n"), Uint8Array.of(1), groundKey))).slice(0, 4);
  checks.add(!!ours && equal(ours.raw.slice(0, 4), kh) && await ed25519Verify(groundKey, ours.raw.slice(4), enc.encode(cp.text)),
    `ground's checkpoint of ${cp.size} leaves is signed by its log key`,
    "ground's checkpoint is not signed by the log key it names");
  await checkLeaf(checks, proof.leaves.item, cp, "the post", { kind: "item", item_id: item.id, body_sha256: hex(bodyHash) });
  await checkLeaf(checks, proof.leaves.key, cp, "the key's enrolment",
    { kind: "key-enrolled", key_id: proof.key_id, public_key: proof.public_key, astronaut: item.author });
  const rev = proof.leaves.revocation;
  if (rev) {
    const before = proof.leaves.item && rev.index < proof.leaves.item.index;
    checks.add(!before, `the key was revoked later (leaf ${rev.index}); this post predates it`,
      "the key was revoked BEFORE this post entered the log");
  }
  for (const p of proof.publications) {
    showPublication(p);
    if (p.state !== "published") continue;
    await checkLeaf(checks, p.leaf, cp, `publication on ${p.account}`,
      { kind: "publication", item_id: item.id, account: p.account, url: p.url, state: "published" });
  }

  // 4. The photos this server hands out are the signed ones.
  for (const m of item.media) {
    const resp = await fetch(`/p/${encodeURIComponent(proof.item_id)}/media/${hex(m.sha256)}`);
    const got = await sha256(new Uint8Array(await resp.arrayBuffer()));
    checks.add(equal(got, m.sha256), `photo ${hex(m.sha256).slice(0, 12)}… is byte-identical to the signed one`,
      `photo ${hex(m.sha256).slice(0, 12)}… served here differs from the signed one`);
  }

  // 4b. Renditions (allowed in the signed post): the bytes served are the ones the log names.
  for (const p of proof.publications) {
    for (const r of p.renditions || []) {
      checks.add(item.renditions.includes(p.account), `the signed post allows a rendition for ${p.account}`,
        `a rendition was sent to ${p.account} but the signed post does not allow one there`);
      const logged = p.leaf ? (JSON.parse(p.leaf.entry).renditions || []) : [];
      checks.add(logged.some((l) => l.sha256 === r.sha256 && l.original_sha256 === r.original_sha256),
        `the log records the rendition sent to ${p.account} (photo ${r.photo}, ${r.recipe}) with both hashes`,
        `the rendition sent to ${p.account} is not in its log leaf`);
      const resp = await fetch(r.url);
      const got = await sha256(new Uint8Array(await resp.arrayBuffer()));
      checks.add(equal(got, unhex(r.sha256)), `the rendition sent to ${p.account} is the one served here`,
        `the rendition served for ${p.account} differs from the one recorded`);
    }
  }

  // 5. Witnesses (keys as this ground lists them: pin them yourself with orbitpost-verify).
  const wit = [];
  for (const c of proof.cosignatures) {
    const key = proof.witnesses[c.witness];
    if (!key) continue;
    const msg = enc.encode(`cosignature/v1\ntime ${c.time_s}\n${cp.text}`);
    const ok = await ed25519Verify(publicKeyBytes(key), unhex(c.signature), msg);
    checks.add(ok, `witness ${c.witness} cosigned this checkpoint`, `witness ${c.witness}'s cosignature is invalid`);
    if (ok) wit.push(c.witness);
  }
  $("witnesses").textContent = wit.length ? `Cosigned by ${wit.join(", ")}.` : "No witness has cosigned this checkpoint yet.";
  return checks;
}

async function main() {
  const id = decodeURIComponent(location.pathname.split("/")[2] || "");
  $("raw").href = `/p/${encodeURIComponent(id)}.json`;
  const verdict = $("verdict");
  try {
    const resp = await fetch(`/p/${encodeURIComponent(id)}.json`);
    if (!resp.ok) throw new Error(`no published post ${id} here (HTTP ${resp.status})`);
    const checks = await verify(await resp.json());
    if (checks.failed.length) throw new Error(checks.failed[0]);
    verdict.className = "verdict ok";
    verdict.textContent = "Verified in your browser: the astronaut signed exactly this text and these photos, and ground's public log holds it.";
  } catch (e) {
    verdict.className = "verdict bad";
    verdict.textContent = "NOT verified: " + e.message;
  }
}
main();
