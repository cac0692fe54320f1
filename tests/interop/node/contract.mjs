// An independent implementation of eCERT's signed-document contract, written from the README ("Signed
// envelopes and receipts") and the field lists in protos/ecert/v1, checked against the shared test vectors.
// Only node:crypto and node:fs: no npm package, no code shared with the Python implementations.
//
// Usage: node contract.mjs ../../vectors/wire-contract.json
// Prints one JSON object {checked, failures: [...]} and exits 0 only if every vector matches.
import { createHash, createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const ENVELOPE_TAG = "ecert.v1.SignedEnvelope\n";
const RECEIPT_TAG = "ecert.v1.Receipt\n";

// ecert.v1.Party and ecert.v1.Certificate: every field is signed, an unset one with its proto3 default.
const PARTY_FIELDS = { name: "", address: "", tax_id: "" };
const CERTIFICATE_FIELDS = {
  certificate_number: "", issuing_country: "", tpl_number: "", htsus_number: "", goods_description: "",
  quantity: "", unit: "", importer_of_record: "", exporter: PARTY_FIELDS, producer: PARTY_FIELDS,
  quota_year: 0, issue_date: "", last_valid_date: "", invoice_number: "",
};

function withDefaults(defaults, given = {}) {
  for (const key of Object.keys(given)) {
    if (!(key in defaults)) throw new Error(`unknown field ${key}`);
  }
  const out = {};
  for (const [key, fallback] of Object.entries(defaults)) {
    out[key] = typeof fallback === "object" ? withDefaults(fallback, given[key]) : (given[key] ?? fallback);
  }
  return out;
}

// --- canonical JSON: keys sorted by Unicode code point, no whitespace, strings escaped minimally --------

function byCodePoint(a, b) {
  const x = Array.from(a, c => c.codePointAt(0));
  const y = Array.from(b, c => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

const SHORT_ESCAPES = { 0x22: '\\"', 0x5c: "\\\\", 0x08: "\\b", 0x0c: "\\f", 0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t" };

function quote(text) {
  let out = '"';
  for (const char of text) {
    const code = char.codePointAt(0);
    if (code in SHORT_ESCAPES) out += SHORT_ESCAPES[code];
    else if (code < 0x20) out += "\\u" + code.toString(16).padStart(4, "0");
    else if (code >= 0xd800 && code <= 0xdfff) throw new Error("a lone surrogate is not UTF-8 text");
    else out += char; // everything else as itself, encoded as UTF-8 below
  }
  return out + '"';
}

function canonical(value) {
  if (typeof value === "string") return quote(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`only integers are signed, got ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort(byCodePoint);
    return "{" + keys.map(k => quote(k) + ":" + canonical(value[k])).join(",") + "}";
  }
  throw new Error(`cannot sign a ${typeof value}`);
}

function tagged(tag, body) {
  return Buffer.concat([Buffer.from(tag, "utf8"), Buffer.from(canonical(body), "utf8")]);
}

// --- the two documents ----------------------------------------------------------------------------------

function instant(at = {}) {
  return { seconds: at.seconds ?? 0, nanos: at.nanos ?? 0 };
}

export function envelopeBytes(e) {
  return tagged(ENVELOPE_TAG, {
    message_id: e.message_id ?? "",
    sender: e.sender ?? "",
    sent_at: instant(e.sent_at),
    action: e.action || "UNSPECIFIED",
    replaces_version: e.replaces_version ?? 0,
    key_id: e.key_id ?? "",
    certificate: withDefaults(CERTIFICATE_FIELDS, e.certificate),
  });
}

export function receiptBytes(r) {
  const body = {
    receipt_id: r.receipt_id ?? "",
    message_id: r.message_id ?? "",
    sender: r.sender ?? "",
    recipient: r.recipient ?? "",
    digest_sha256: (r.digest_sha256 ?? "").toLowerCase(),
    received_at: instant(r.received_at),
    outcome: r.outcome,
    issues: (r.issues ?? []).map(i => ({ code: i.code, field: i.field, description: i.description, severity: i.severity })),
    action: r.action || "UNSPECIFIED",
    certificate_number: r.certificate_number ?? "",
    certificate_version: r.certificate_version ?? 0,
    signing_key_id: r.signing_key_id ?? "",
  };
  if (r.signature_sha256) body.signature_sha256 = r.signature_sha256.toLowerCase(); // absent on older receipts
  return tagged(RECEIPT_TAG, body);
}

// --- Ed25519 keys from raw 32-byte halves (RFC 8410 DER wrappers) ----------------------------------------

function privateKey(secretHex) {
  const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), Buffer.from(secretHex, "hex")]);
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

function publicKey(publicHex) {
  const der = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), Buffer.from(publicHex, "hex")]);
  return createPublicKey({ key: der, format: "der", type: "spki" });
}

const sha256 = bytes => createHash("sha256").update(bytes).digest();

// --- checking the file ----------------------------------------------------------------------------------

function changeOneByte(text) {
  const last = text.codePointAt(text.length - 1);
  if (last > 0x7f) throw new Error("expected an ASCII last character");
  return text.slice(0, -1) + String.fromCharCode(last ^ 1);
}

function main() {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node contract.mjs WIRE-CONTRACT.json");
    process.exit(2);
  }
  const vectors = JSON.parse(readFileSync(file, "utf8"));
  const failures = [];
  let checked = 0;
  const expect = (ok, what) => { if (!ok) failures.push(what); };

  const keys = {};
  for (const [role, k] of Object.entries(vectors.keys)) {
    const priv = privateKey(k.secret_key_hex);
    const pub = publicKey(k.public_key_hex);
    const derived = createPublicKey(priv).export({ format: "der", type: "spki" }).subarray(-32).toString("hex");
    expect(derived === k.public_key_hex, `${role} key: public key derived from the secret is ${derived}`);
    const rfc = sign(null, Buffer.from(k.check_message_hex, "hex"), priv).toString("hex");
    expect(rfc === k.check_signature_hex, `${role} key: RFC 8032 test message signs to ${rfc}`);
    keys[role] = { priv, pub };
  }

  const documents = [
    ...vectors.envelopes.map(v => ({ kind: "envelope", v, bytes: envelopeBytes, key: keys.partner,
      tamper: input => ({ ...input, certificate: { ...input.certificate, certificate_number: changeOneByte(input.certificate.certificate_number) } }) })),
    ...vectors.receipts.map(v => ({ kind: "receipt", v, bytes: receiptBytes, key: keys.customs,
      tamper: input => ({ ...input, receipt_id: changeOneByte(input.receipt_id) }) })),
  ];
  for (const { kind, v, bytes, key, tamper } of documents) {
    const label = `${kind} ${v.name}`;
    const mine = bytes(v.input);
    const signature = Buffer.from(v.signature_hex, "hex");
    expect(mine.toString("hex") === v.canonical_hex,
      `${label}: canonical bytes differ\n  expected ${v.canonical_text}\n  node     ${mine.toString("utf8")}`);
    expect(sha256(mine).toString("hex") === v.sha256_hex, `${label}: SHA-256 ${sha256(mine).toString("hex")} != ${v.sha256_hex}`);
    const mySignature = sign(null, mine, key.priv).toString("hex");
    expect(mySignature === v.signature_hex, `${label}: signature ${mySignature} != ${v.signature_hex}`);
    expect(verify(null, Buffer.from(v.canonical_hex, "hex"), key.pub, signature), `${label}: the vector's signature does not verify`);
    const changed = bytes(tamper(v.input));
    expect(changed.length === mine.length && !changed.equals(mine), `${label}: one changed byte should change one byte of the canonical bytes`);
    expect(sha256(changed).toString("hex") !== v.sha256_hex, `${label}: one changed byte kept the SHA-256`);
    expect(!verify(null, changed, key.pub, signature), `${label}: the signature verifies over changed bytes`);
    checked += 1;
  }
  console.log(JSON.stringify({ checked, failures }, null, 2));
  process.exit(failures.length === 0 && checked > 0 ? 0 : 1);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
