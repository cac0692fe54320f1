"""Witness cosignatures (C2SP tlog-cosignature, cosignature/v1): published cosignatures of a real
log checkpoint verified, then round trips and every way a key, a line or a note can be wrong."""
from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.cosignature import (
    CosignatureError,
    WitnessKey,
    WitnessVerifier,
    cosign,
    cosignature_timestamp,
    key_id,
    signed_message,
    split_note,
    verify_cosignature,
    with_cosignatures,
)
from contract.note import Checkpoint, NoteError, NoteVerifier, open_note, sign_note

# A checkpoint of Google's staging CT log arche2025h1 as served with the cosignatures of four
# witnesses of the public witness network (collected in 2026), and those witnesses' published
# verifier keys. The log's first line is an RFC 6962 tree-head signature (type 0x05), its second an
# Ed25519 note signature: neither is a cosignature, and both must be skipped.
REAL_BODY = "arche2025h1.staging.ct.transparency.dev\n1432088532\nU7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
REAL_LOG_KEY = "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
REAL_SIGNATURES = [
    ("arche2025h1.staging.ct.transparency.dev", "zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0="),
    ("arche2025h1.staging.ct.transparency.dev", "ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ="),
    ("transparency.dev/DEV:witness-little-garden", "2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ=="),
    ("witness1.smartit.nu/witness1", "pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ=="),
    ("remora.n621.de", "2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw=="),
    ("witness.stagemole.eu", "Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg=="),
]
REAL_NOTE = REAL_BODY + "\n" + "".join(f"\u2014 {name} {sig}\n" for name, sig in REAL_SIGNATURES)
REAL_WITNESSES = [
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
]
REAL_TIME = 1779573024  # all four cosigned within the same second


def test_published_cosignatures_of_a_real_checkpoint_verify():
    found = verify_cosignature(REAL_NOTE, REAL_WITNESSES)
    assert [c.name for c in found] == [k.split("+")[0] for k in REAL_WITNESSES]
    assert {c.timestamp for c in found} == {REAL_TIME}
    assert [c.key_id.hex() for c in found] == [k.split("+")[1] for k in REAL_WITNESSES]
    assert found[2].line == f"\u2014 {REAL_SIGNATURES[4][0]} {REAL_SIGNATURES[4][1]}"
    # The log's own Ed25519 line opens the same note as a plain signed note, the cosignatures skipped.
    opened = open_note(REAL_NOTE, [NoteVerifier.parse(REAL_LOG_KEY)])
    assert opened.text == REAL_BODY and opened.other_signatures == 5


def test_published_witness_keys_round_trip_and_use_type_0x04():
    for text in REAL_WITNESSES:
        verifier = WitnessVerifier.parse(text)
        assert verifier.text() == text
        assert verifier.key_id == hashlib.sha256(verifier.name.encode() + b"\n\x04" + verifier.public_key).digest()[:4]


def test_the_signed_message_is_header_time_line_and_the_whole_body():
    body = "example.com/log\n5\n" + base64.b64encode(bytes(32)).decode() + "\nextension line\n"
    assert signed_message(body, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nextension line\n")
    with pytest.raises(CosignatureError):
        signed_message(body, 2**63)
    with pytest.raises(CosignatureError):
        signed_message(body, -1)


def test_a_published_cosignature_fails_on_an_altered_body_or_time():
    for altered in (REAL_NOTE.replace("1432088532", "1432088533"), REAL_NOTE.replace("U7WM", "U8WM")):
        with pytest.raises(CosignatureError, match="does not verify"):
            verify_cosignature(altered, REAL_WITNESSES[2:3])
    # remora's line with its time one second later (key id and signature unchanged).
    raw = bytearray(base64.b64decode(REAL_SIGNATURES[4][1]))
    raw[11] += 1
    line = f"\u2014 remora.n621.de {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignature(REAL_BODY + "\n" + line, REAL_WITNESSES[2:3])


# --- our own witness keys ----------------------------------------------------------------------

LOG = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
BODY = Checkpoint("ecert.example/log", 7, bytes(range(32))).text()
NOTE = sign_note(BODY, "ecert.example/log", LOG)


def witness(name: str = "witness.example/w1", seed: int = 1) -> WitnessKey:
    return WitnessKey(name, Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def test_round_trip_with_the_log_signature_kept():
    key = witness()
    line = cosign(NOTE, key, 1_780_000_000)
    cosigned = with_cosignatures(NOTE, [line])
    assert cosigned == NOTE + line + "\n"
    assert split_note(cosigned) == (BODY, [NOTE.rstrip("\n").split("\n")[-1], line])
    [found] = verify_cosignature(cosigned, [key.verifier.text()])
    assert (found.name, found.timestamp, found.line, found.key_id) == (key.name, 1_780_000_000, line, key.verifier.key_id)
    assert cosignature_timestamp(line) == 1_780_000_000
    # The log's note still opens with the log's key; the cosignature counts as another's line.
    opened = open_note(cosigned, [NoteVerifier("ecert.example/log", LOG.public_key().public_bytes_raw())])
    assert opened.other_signatures == 1
    # Cosigning the bare body gives the same line (Ed25519 is deterministic).
    assert cosign(BODY, key, 1_780_000_000) == line
    assert with_cosignatures(cosigned, [line]) == cosigned  # not repeated


def test_a_cosignature_line_layout():
    key = witness()
    line = cosign(NOTE, key, 0x0102030405060708)
    prefix, name, encoded = line.split(" ")
    raw = base64.b64decode(encoded)
    assert (prefix, name, len(raw)) == ("\u2014", key.name, 76)
    assert raw[:4] == key_id(key.name, key.verifier.public_key)
    assert raw[4:12] == bytes([1, 2, 3, 4, 5, 6, 7, 8])


def test_the_witness_key_text_names_type_0x04():
    verifier = witness().verifier
    name, hex_id, encoded = verifier.text().split("+", 2)
    assert base64.b64decode(encoded)[:1] == b"\x04" and hex_id == verifier.key_id.hex()
    assert WitnessVerifier.parse(verifier.text()) == verifier


def test_wrong_key_is_skipped_not_accepted():
    line = cosign(NOTE, witness(), 1_780_000_000)
    other = witness(seed=2)
    assert verify_cosignature(with_cosignatures(NOTE, [line]), [other.verifier]) == []
    # Same name, other key: another key id, so the line is not this key's.
    impostor = witness(seed=3)
    assert verify_cosignature(with_cosignatures(NOTE, [cosign(NOTE, impostor, 1)]), [witness().verifier]) == []


def test_a_forged_line_under_a_known_key_refuses_the_note():
    key = witness()
    line = cosign(NOTE, key, 1_780_000_000)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[-1] ^= 1
    forged = f"\u2014 {key.name} {base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignature(with_cosignatures(NOTE, [forged]), [key.verifier])


def test_altered_body_and_altered_timestamp_fail():
    key = witness()
    cosigned = with_cosignatures(NOTE, [cosign(NOTE, key, 1_780_000_000)])
    altered = cosigned.replace("\n7\n", "\n8\n")
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignature(altered, [key.verifier])
    line = cosigned.rstrip("\n").split("\n")[-1]
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1
    retimed = cosigned.replace(line, f"\u2014 {key.name} {base64.b64encode(bytes(raw)).decode()}")
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignature(retimed, [key.verifier])


def test_wrong_algorithm_byte():
    key = witness()
    # A plain note signature (type 0x01) by the same key and name is not a cosignature ...
    plain = sign_note(BODY, key.name, key.private_key)
    assert verify_cosignature(plain, [key.verifier]) == []
    # ... and a cosignature does not pass for a plain signature of the witness.
    cosigned = with_cosignatures(NOTE, [cosign(NOTE, key, 5)])
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(cosigned, [NoteVerifier(key.name, key.verifier.public_key)])
    # Verifier keys of type 0x01 are refused as witness keys, with the reason.
    with pytest.raises(CosignatureError, match="0x01"):
        WitnessVerifier.parse(NoteVerifier(key.name, key.verifier.public_key).text())
    # A line whose key id was computed with 0x01 is not the witness's line.
    line = cosign(NOTE, key, 5)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[:4] = hashlib.sha256(key.name.encode() + b"\n\x01" + key.verifier.public_key).digest()[:4]
    assert verify_cosignature(NOTE + f"\u2014 {key.name} {base64.b64encode(bytes(raw)).decode()}\n", [key.verifier]) == []


def test_a_time_after_the_latest_accepted_is_refused():
    key = witness()
    cosigned = with_cosignatures(NOTE, [cosign(NOTE, key, 1_000)])
    assert verify_cosignature(cosigned, [key.verifier], latest=1_000)
    with pytest.raises(CosignatureError, match="after 999"):
        verify_cosignature(cosigned, [key.verifier], latest=999)


def test_two_cosignatures_by_one_witness_count_once_its_latest():
    key = witness()
    cosigned = with_cosignatures(NOTE, [cosign(NOTE, key, 20), cosign(NOTE, key, 10)])
    [found] = verify_cosignature(cosigned, [key.verifier])
    assert found.timestamp == 20


@pytest.mark.parametrize("text", [
    "", "name", "name+00000000", "na me+00000000+BA==",
    "w+12345678+" + base64.b64encode(b"\x04" + bytes(32)).decode(),  # wrong key id
    "w+" + key_id("w", bytes(32)).hex().upper() + "+" + base64.b64encode(b"\x04" + bytes(32)).decode(),  # upper-case id
    "w+" + key_id("w", bytes(31)).hex() + "+" + base64.b64encode(b"\x04" + bytes(31)).decode(),  # short key
    "w+" + key_id("w", bytes(32)).hex() + "+not base64!",
])
def test_malformed_witness_keys(text):
    with pytest.raises(CosignatureError):
        WitnessVerifier.parse(text)


@pytest.mark.parametrize("note", [
    BODY,  # no signatures
    BODY + "\n",  # a blank line and nothing after it
    BODY + "\n- not an em dash\n",
    BODY + "\n\u2014 name\n",
    BODY + "\n\u2014 name !!!\n",
    "not\na checkpoint\n\n\u2014 name AAAA\n",
])
def test_malformed_notes(note):
    with pytest.raises(CosignatureError):
        verify_cosignature(note, [witness().verifier])


def test_only_checkpoints_are_cosigned_and_names_are_checked():
    with pytest.raises(NoteError):
        cosign("just a note\n", witness(), 1)
    with pytest.raises(CosignatureError):
        WitnessKey("two words", Ed25519PrivateKey.generate())
    with pytest.raises(CosignatureError):
        cosignature_timestamp("\u2014 w AAAA")
