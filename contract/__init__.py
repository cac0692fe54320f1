"""The wire contract: what every party to eCERT must agree on byte for byte.

The server, the SDK and `ecert` command, the simulated partner and relay, and the benchmarks all import
this package; it imports none of them (only the standard library, `cryptography`, protobuf and the
generated `ecert` package). tests/vectors/wire-contract.json is its test: every implementation, this one
and the Node.js client's included, must reproduce it.

    canonical      canonical bytes: the JSON rule and the domain tags of signed documents
    certificate    a certificate exactly as transmitted, read from its protobuf message
    findings       coded observations (issues) on a document's fields, as receipts carry them
    signing        Ed25519 signers, signature checks, SHA-256
    keys           Ed25519 keys in PEM files, as parties exchange them
    envelope       a signed envelope's bytes, digest, sealing and checking
    receipt        customs' signed receipt: its bytes and offline verification
    identity       who a TLS certificate says its holder is (subject-alternative-name URIs)
    entry_number   CBP entry numbers and their check digit
    constants      names shared on the wire: the gRPC error domain, the request-id header
    protos         the generated protobuf modules (the `ecert` package, compiled from protos/)
"""
