"""The transparency log over mutual TLS: every role reads checkpoints and proofs; only a witness hands
in cosignatures."""
from __future__ import annotations

import grpc
import pytest

from client.pki import issue, load_authority, write_party
from client.tls import channel_credentials
from contract.identity import Identity, Role
from ecert.v1 import log_pb2 as lpb
from ecert.v1 import log_pb2_grpc
from tests.grpc_errors import rich_error
from tests.tls_fixtures import channel_as, pki, secure_server  # noqa: F401 - fixtures


@pytest.mark.parametrize("party", ["gateway-mx", "relay", "customs", "importer", "admin"])
def test_every_role_reads_the_log_but_only_a_witness_cosigns(pki, secure_server, party):  # noqa: F811
    secure_server.use_cases.log.integrate()
    log = log_pb2_grpc.LogServiceStub(channel_as(pki, party, secure_server.port))
    note = log.GetCheckpoint(lpb.GetCheckpointRequest(), timeout=5).note
    assert note.startswith(secure_server.use_cases.log.origin + "\n")
    with pytest.raises(grpc.RpcError) as caught:
        log.AddCosignature(lpb.AddCosignatureRequest(cosigned_note=note), timeout=5)
    assert (rich_error(caught.value).code, rich_error(caught.value).reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def test_a_witness_reaches_add_cosignature(pki, secure_server, tmp_path):  # noqa: F811
    authority = load_authority(pki.root / "ca")
    folder = write_party(tmp_path / "witness-mx", authority, issue(authority, Identity("Mexico's log witness", Role.WITNESS, frozenset({"MX"}))))
    (folder / "ca.pem").write_bytes((pki.root / "ca" / "ca.pem").read_bytes())
    secure_server.use_cases.log.integrate()
    channel = grpc.secure_channel(f"127.0.0.1:{secure_server.port}", channel_credentials(folder))
    log = log_pb2_grpc.LogServiceStub(channel)
    note = log.GetCheckpoint(lpb.GetCheckpointRequest(), timeout=5).note
    with pytest.raises(grpc.RpcError) as caught:
        log.AddCosignature(lpb.AddCosignatureRequest(cosigned_note=note), timeout=5)
    # Past the role check: refused by the use case, since no configured witness key signed it.
    assert rich_error(caught.value).reason == "COSIGNATURE_NOT_ACCEPTED"
