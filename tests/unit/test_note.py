"""Signed notes and checkpoints (C2SP signed-note, tlog-checkpoint) against the published Go
implementation's vectors (golang.org/x/mod/sumdb/note: the PeterNeumann key, text and signature), and
every way a note, a key or a checkpoint can be wrong."""
from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract import merkle
from contract.note import Checkpoint, NoteError, NoteVerifier, open_note, raw_public_key, sign_note

SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
SIGNED = TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
ENOCH_LINE = "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"


def peter() -> Ed25519PrivateKey:
    seed = base64.b64decode(SIGNER.split("+", 4)[4])  # PRIVATE+KEY+name+hash+key; the key may hold "+"
    assert seed[:1] == b"\x01"
    return Ed25519PrivateKey.from_private_bytes(seed[1:])


def test_signing_gives_the_published_note_and_key():
    key = peter()
    assert NoteVerifier("PeterNeumann", raw_public_key(key.public_key())).text() == VERIFIER
    assert sign_note(TEXT, "PeterNeumann", key) == SIGNED


def test_a_note_opens_with_its_key_and_counts_cosignatures_it_cannot_check():
    opened = open_note(SIGNED[:-1] + "\n" + ENOCH_LINE, [NoteVerifier.parse(VERIFIER)])
    assert (opened.text, opened.signed_by, opened.other_signatures) == (TEXT, ("PeterNeumann",), 1)
    both = open_note(SIGNED + ENOCH_LINE, [NoteVerifier.parse(VERIFIER), NoteVerifier.parse(ENOCH)])
    assert both.signed_by == ("PeterNeumann", "EnochRoot")


@pytest.mark.parametrize("note", [
    SIGNED.replace("cryptography", "Cryptography"),  # the text changed
    SIGNED.replace("x08go", "x08gp"),  # the signature changed (same key hash)
    TEXT,  # no signatures
    TEXT + "\n",
    SIGNED[:-1],  # no final newline
    SIGNED + "Unexpected line.\n",
    SIGNED.replace("\u2014 PeterNeumann", "\u2014 Bad Name"),
    SIGNED.replace("\u2014 ", "- "),  # not an em dash
])
def test_a_tampered_or_malformed_note_never_opens(note: str):
    with pytest.raises(NoteError):
        open_note(note, [NoteVerifier.parse(VERIFIER)])


def test_a_note_signed_only_by_unknown_keys_does_not_open():
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(SIGNED, [NoteVerifier.parse(ENOCH)])


@pytest.mark.parametrize("key", [
    VERIFIER.replace("c74f20a3", "c74f20a4"),  # hash of another name or key
    VERIFIER.replace("PeterNeumann", "PeterNeuman"),
    VERIFIER[:-4],  # a truncated key
    "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
    "PeterNeumann+c74f20a3",
])
def test_a_mangled_verifier_key_is_refused(key: str):
    with pytest.raises(NoteError):
        NoteVerifier.parse(key)


def test_a_checkpoint_is_three_lines_signed_and_read_back():
    leaves = [merkle.leaf_hash(bytes([n])) for n in range(5)]
    checkpoint = Checkpoint("customs.example/ecert-log", 5, merkle.root(leaves))
    assert checkpoint.text() == f"customs.example/ecert-log\n5\n{base64.b64encode(merkle.root(leaves)).decode()}\n"
    key = Ed25519PrivateKey.generate()
    note = sign_note(checkpoint.text(), "customs.example/ecert-log", key)
    opened = open_note(note, [NoteVerifier("customs.example/ecert-log", raw_public_key(key.public_key()))])
    assert Checkpoint.parse(opened.text) == checkpoint


@pytest.mark.parametrize("text", [
    "origin\n5\n", "origin\n05\n" + "A" * 43 + "=\n", "origin\n-1\n" + "A" * 43 + "=\n", "origin\n5\nnot base64!\n",
    "origin\n5\n" + base64.b64encode(b"short").decode() + "\n", "\n5\n" + "A" * 43 + "=\n", "origin\n5\n" + "A" * 43 + "=",
    "origin\n\u0665\n" + "A" * 43 + "=\n",  # an Arabic-Indic digit
])
def test_a_malformed_checkpoint_is_refused(text: str):
    with pytest.raises(NoteError):
        Checkpoint.parse(text)
