"""Writes tests/vectors/wire-contract.json from the contract package (contract/; the server's code when the file
was generated, moved there since, byte for byte the same). Run ONCE; the file is the contract.

    python -m tests.vectors.generate > tests/vectors/wire-contract.json

The tests never call this: they read the committed file, so a change to canonical bytes, digests or
signatures in any implementation fails them instead of quietly producing a new file. Regenerating is a
change of the wire contract and must be reviewed as one (every partner's implementation breaks).
"""
from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.canonical import envelope_bytes
from contract.certificate import CertificateDraft, PartyDraft
from contract.findings import Finding, Severity
from contract.receipt import Outcome, Receipt
from contract.signing import Signer, sha256

# RFC 8032 section 7.1, TEST 1 and TEST 3: published keys, so that anyone can re-check the signatures.
PARTNER_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
CUSTOMS_SECRET = "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"
PARTNER_KEY_ID = "mx-test-rfc8032-1"
CUSTOMS_KEY_ID = "cbp-test-rfc8032-3"

DESCRIPTION = [
    "eCERT wire-contract test vectors: what every implementation (the server, the partner simulator and SDK, "
    "the Node.js client) must reproduce byte for byte. Generated once by tests/vectors/generate.py from the "
    "server's code, checked by hand against the README ('Signed envelopes and receipts'); from then on this file "
    "is the contract and the tests only read it.",
    "Canonical bytes = a domain tag ('ecert.v1.SignedEnvelope\\n' or 'ecert.v1.Receipt\\n') followed by a JSON "
    "object, keys sorted (by code point), no whitespace, UTF-8 (non-ASCII characters as themselves, not \\u escapes; "
    "only '\"', '\\\\' and control characters below U+0020 are escaped, with \\n \\r \\t \\b \\f or lowercase \\u00xx).",
    "Envelope object: every field of ecert.v1.SignedEnvelope except the signature: message_id, sender, "
    "sent_at {seconds, nanos}, action (CREATE, REPLACE, CANCEL; UNSPECIFIED when unset), replaces_version, key_id, "
    "certificate (every field of ecert.v1.Certificate, unset ones as '' or 0; exporter and producer each "
    "{name, address, tax_id}); strings exactly as transmitted.",
    "Receipt object: receipt_id, message_id, sender, recipient, digest_sha256 (lowercase hex), received_at "
    "{seconds, nanos}, outcome (ACCEPTED, ACCEPTED_WITH_WARNINGS, REJECTED), issues [{code, field, description, "
    "severity ('error' or 'warning')}] in order, action, certificate_number, certificate_version, signing_key_id, "
    "and signature_sha256 (lowercase hex) only when the receipt carries one (receipts issued before the field "
    "existed omit the key).",
    "Each vector gives 'input' (the fields; a certificate lists only the fields that are set, the rest take their "
    "proto3 defaults), 'canonical_hex' (authoritative), 'canonical_text' (the same bytes decoded, for reading), "
    "'sha256_hex' (the envelope's digest / the receipt's hash) and 'signature_hex' (Ed25519, RFC 8032, "
    "deterministic). Envelopes are signed with keys.partner, receipts with keys.customs.",
    "Keys: the secret keys of RFC 8032 section 7.1 TEST 1 (partner) and TEST 3 (customs), public test keys that "
    "must never be trusted outside tests. keys.*.check_signature_hex is RFC 8032's own signature for that test "
    "(message: TEST 1 empty, TEST 3 the two bytes 0xaf82), to check an implementation's key handling first.",
]


def key_entry(secret_hex: str, key_id: str, message: bytes) -> dict[str, Any]:
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret_hex))
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "key_id": key_id,
        "secret_key_hex": secret_hex,
        "public_key_hex": public.hex(),
        "check_message_hex": message.hex(),
        "check_signature_hex": private.sign(message).hex(),
    }


def party(data: dict[str, str] | None) -> PartyDraft:
    return PartyDraft(**(data or {}))


def draft(data: dict[str, Any]) -> CertificateDraft:
    rest = {k: v for k, v in data.items() if k not in ("exporter", "producer")}
    return CertificateDraft(**rest, exporter=party(data.get("exporter")), producer=party(data.get("producer")))


def sugar(number: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "certificate_number": number,
        "issuing_country": "MX",
        "tpl_number": "9823.53.01",
        "htsus_number": "1701.14.10",
        "goods_description": "Azúcar de caña cruda, polarización 98.5°",
        "quantity": "1250.5",
        "unit": "MT",
        "importer_of_record": "12-3456789AB",
        "exporter": {"name": "Exportadora del Bajío S.A. de C.V.", "address": "Av. Juárez 123, León, Gto., México",
                     "tax_id": "EBA010101AB1"},
        "producer": {"name": "Ingenio San José de Abajo", "address": "Carretera Federal 45 km 12, León, Gto.",
                     "tax_id": "ISJ990101XY2"},
        "quota_year": 2026,
        "issue_date": "2026-03-02",
        "last_valid_date": "2026-09-30",
        "invoice_number": "F-2026-000123",
    }
    base.update(changes)
    return base


ENVELOPES: list[tuple[str, str, dict[str, Any]]] = [
    ("create", "CREATE, a full certificate; non-ASCII addresses and description; a quantity with decimals", {
        "message_id": "mx-20260302-0001", "sender": "MX", "sent_at": {"seconds": 1772463600, "nanos": 0},
        "action": "CREATE", "replaces_version": 0, "key_id": PARTNER_KEY_ID,
        "certificate": sugar("MX26-00000001"),
    }),
    ("replace", "REPLACE of version 1 (replaces_version 1): new quantity with three decimals, new address; sent_at with nanos", {
        "message_id": "mx-20260305-0002", "sender": "MX", "sent_at": {"seconds": 1772722800, "nanos": 250000000},
        "action": "REPLACE", "replaces_version": 1, "key_id": PARTNER_KEY_ID,
        "certificate": sugar("MX26-00000001", quantity="1200.125",
                             exporter={"name": "Exportadora del Bajío S.A. de C.V.",
                                       "address": "Blvd. Adolfo López Mateos 2301 Ote., León, Gto.", "tax_id": "EBA010101AB1"}),
    }),
    ("cancel", "CANCEL of version 2: only certificate_number and issuing_country set, every other field at its default", {
        "message_id": "mx-20260310-0003", "sender": "MX", "sent_at": {"seconds": 1773140400, "nanos": 5000},
        "action": "CANCEL", "replaces_version": 2, "key_id": PARTNER_KEY_ID,
        "certificate": {"certificate_number": "MX26-00000001", "issuing_country": "MX"},
    }),
    ("create-invalid", "CREATE that customs rejects (the 'rejected' receipt judges it): malformed HTSUS number, validity inverted, no producer tax id", {
        "message_id": "mx-20260311-0004", "sender": "MX", "sent_at": {"seconds": 1773230400, "nanos": 999999000},
        "action": "CREATE", "replaces_version": 0, "key_id": PARTNER_KEY_ID,
        "certificate": sugar("MX26-00000002", htsus_number="1701.1X", last_valid_date="2026-01-31", quantity="0.001",
                             producer={"name": "Cooperativa Cañera Ñuu Savi", "address": "Calle Guerrero 7, Tlaxiaco, Oax."}),
    }),
    ("escaping", "Canonical-bytes edge cases (not a valid certificate): quote, backslash, solidus, tab, newline, carriage return, U+0001, "
     "U+001F, DEL, U+00E9 precomposed and e + U+0301 decomposed (kept as sent, never normalized), U+2028, an astral-plane emoji; "
     "action unset (UNSPECIFIED); nanos not a multiple of 1000", {
        "message_id": "mx-edge-0005", "sender": "MX", "sent_at": {"seconds": 1773316800, "nanos": 123456789},
        "action": "UNSPECIFIED", "replaces_version": 0, "key_id": PARTNER_KEY_ID,
        "certificate": {"certificate_number": "MX26-00000003", "issuing_country": "MX",
                        "goods_description": "Caña \"estándar\" \\ 50/50\tlote\n2\r\u0001\u001f\u007f",
                        "invoice_number": "caf\u00e9 cafe\u0301 \u2028 \U0001F36C",
                        "exporter": {"name": "O'Higgins & Hijos <S.A.>", "address": "", "tax_id": ""}},
    }),
]


def envelope_vector(name: str, about: str, data: dict[str, Any], signer: Signer) -> dict[str, Any]:
    canonical = envelope_bytes(
        message_id=data["message_id"], sender=data["sender"], sent_at_seconds=data["sent_at"]["seconds"],
        sent_at_nanos=data["sent_at"]["nanos"], action=data["action"], replaces_version=data["replaces_version"],
        key_id=data["key_id"], certificate=draft(data["certificate"]),
    )
    return {"name": name, "about": about, "input": data, "canonical_hex": canonical.hex(),
            "canonical_text": canonical.decode("utf-8"), "sha256_hex": sha256(canonical).hex(),
            "signature_hex": signer.sign(canonical).hex()}


def receipt_vector(name: str, about: str, data: dict[str, Any], signer: Signer) -> dict[str, Any]:
    at = data["received_at"]
    receipt = Receipt(
        receipt_id=data["receipt_id"], message_id=data["message_id"], sender=data["sender"], recipient=data["recipient"],
        digest=bytes.fromhex(data["digest_sha256"]),
        received_at=dt.datetime.fromtimestamp(at["seconds"], dt.timezone.utc) + dt.timedelta(microseconds=at["nanos"] // 1000),
        received_at_nanos=at["nanos"], outcome=Outcome(data["outcome"]),
        issues=tuple(Finding(i["code"], i["field"], i["description"], Severity(i["severity"])) for i in data["issues"]),
        action=data["action"], certificate_number=data["certificate_number"],
        certificate_version=data["certificate_version"], signing_key_id=data["signing_key_id"],
        signature_sha256=bytes.fromhex(data.get("signature_sha256", "")),
    )
    signed = receipt.signed_by(signer)
    canonical = signed.signing_bytes()
    return {"name": name, "about": about, "input": data, "canonical_hex": canonical.hex(),
            "canonical_text": canonical.decode("utf-8"), "sha256_hex": sha256(canonical).hex(),
            "signature_hex": signed.signature.hex()}


def main() -> None:
    partner = Signer(PARTNER_KEY_ID, Ed25519PrivateKey.from_private_bytes(bytes.fromhex(PARTNER_SECRET)))
    customs = Signer(CUSTOMS_KEY_ID, Ed25519PrivateKey.from_private_bytes(bytes.fromhex(CUSTOMS_SECRET)))
    envelopes = [envelope_vector(name, about, data, partner) for name, about, data in ENVELOPES]
    judged = {v["name"]: v for v in envelopes}

    def common(envelope: str, receipt_id: str, seconds: int, nanos: int) -> dict[str, Any]:
        e = judged[envelope]
        return {"receipt_id": receipt_id, "message_id": e["input"]["message_id"], "sender": "MX", "recipient": "US-CBP",
                "digest_sha256": e["sha256_hex"], "received_at": {"seconds": seconds, "nanos": nanos}}

    def judged_signature(envelope: str) -> str:
        return sha256(bytes.fromhex(judged[envelope]["signature_hex"])).hex()

    receipts = [
        receipt_vector("accepted", "ACCEPTED, no issues, judging envelope 'create' (its digest and its signature's SHA-256)", {
            **common("create", "R-2026-000001", 1772463601, 123456000), "outcome": "ACCEPTED", "issues": [],
            "action": "CREATE", "certificate_number": "MX26-00000001", "certificate_version": 1,
            "signing_key_id": CUSTOMS_KEY_ID, "signature_sha256": judged_signature("create"),
        }, customs),
        receipt_vector("accepted-with-warnings", "ACCEPTED_WITH_WARNINGS judging envelope 'replace' (version 2); a warning issue", {
            **common("replace", "R-2026-000002", 1772722801, 7), "outcome": "ACCEPTED_WITH_WARNINGS",
            "issues": [{"code": "HTSUS_OUTSIDE_TPL", "field": "certificate.htsus_number",
                        "description": "goods are not in a chapter usually covered by this TPL", "severity": "warning"}],
            "action": "REPLACE", "certificate_number": "MX26-00000001", "certificate_version": 2,
            "signing_key_id": CUSTOMS_KEY_ID, "signature_sha256": judged_signature("replace"),
        }, customs),
        receipt_vector("rejected", "REJECTED judging envelope 'create-invalid': two errors and a warning, in the order customs found them; version 0", {
            **common("create-invalid", "R-2026-000003", 1773230402, 500000000), "outcome": "REJECTED",
            "issues": [
                {"code": "HTSUS_NUMBER_MALFORMED", "field": "certificate.htsus_number",
                 "description": "must be 6 to 10 digits (dots allowed between groups)", "severity": "error"},
                {"code": "VALIDITY_INVERTED", "field": "certificate.last_valid_date", "description": "is before the issue date",
                 "severity": "error"},
                {"code": "TAX_ID_MISSING", "field": "certificate.producer.tax_id",
                 "description": "no tax id given for the party (Cooperativa Cañera Ñuu Savi)", "severity": "warning"},
            ],
            "action": "CREATE", "certificate_number": "MX26-00000002", "certificate_version": 0,
            "signing_key_id": CUSTOMS_KEY_ID, "signature_sha256": judged_signature("create-invalid"),
        }, customs),
        receipt_vector("accepted-legacy", "ACCEPTED judging envelope 'cancel' (version 3), issued before signature_sha256 existed: the key is absent from the signed object", {
            **common("cancel", "R-2026-000004", 1773140401, 0), "outcome": "ACCEPTED", "issues": [],
            "action": "CANCEL", "certificate_number": "MX26-00000001", "certificate_version": 3,
            "signing_key_id": CUSTOMS_KEY_ID,
        }, customs),
    ]
    document = {
        "description": DESCRIPTION,
        "keys": {"partner": key_entry(PARTNER_SECRET, PARTNER_KEY_ID, b""),
                 "customs": key_entry(CUSTOMS_SECRET, CUSTOMS_KEY_ID, b"\xaf\x82")},
        "envelopes": envelopes,
        "receipts": receipts,
    }
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
