"""The wire contract: what every party to eCERT must agree on byte for byte.

The server, the SDK and `ecert` command, the simulated partner and relay, and the benchmarks all import
this package; it imports none of them (only the standard library, `cryptography`, protobuf and the
generated `ecert` package). tests/vectors/wire-contract.json is its test: every implementation, this one
and the Node.js client's included, must reproduce it.

    canonical      canonical bytes: the JSON rule and the domain tags of signed documents
    certificate    a certificate exactly as transmitted: text, unparsed
    findings       coded observations (issues) on a document's fields, as receipts carry them
    errors         errors as every party reports them: a reason code and a kind (DomainError, ErrorKind)
    signing        Ed25519 signers, signature checks, SHA-256
    keys           Ed25519 keys in PEM files and trust-store entries, as parties exchange them
    envelope       a signed envelope's bytes, digest, sealing and checking
    receipt        customs' signed receipt: its bytes and offline verification
    messages       contract documents read off their protobuf messages; enum tables
    log_entry      the transparency log's entries (what each Merkle leaf hashes)
    merkle         RFC 6962 tree hashes, inclusion and consistency proofs
    note           signed notes (C2SP) and the log's checkpoints
    cosignature    witnesses' cosignatures of checkpoints (C2SP tlog-cosignature)
    identity       who a TLS certificate says its holder is (subject-alternative-name URIs)
    tls_files      a party's TLS folder (ca.pem, cert.pem, key.pem)
    entry_number   CBP entry numbers and their check digit
    constants      names shared on the wire: the gRPC error domain, the request-id header, message ids
    protos         the generated protobuf modules (the `ecert` package, compiled from protos/)

The modules that need no protobuf (all but protos, messages and envelope) are the ones the server's
domain and use cases may import (docs/architecture.md).
"""
