"""Who may call the service's methods: its POLICY, on the kit's authorizer (service_kit/authorization.py).

Adding a service means adding its rows to POLICY: a full method name ("/pkg.Service/Method") or a
whole service ("/pkg.Service/*") mapped to the roles allowed and, per role, an optional check on the
request (e.g. a partner may only touch its own country's certificates). Anything not listed is
refused. What depends on the role alone is also answered by the serving layer as soon as a call
starts, before its request arrives (refusal_before_request, server/api/serving.py). Checks that need
stored data (an importer may only see certificates naming it) belong to the use case, which gets the
caller from `caller(context)`, or to a check on the answer (own_importer).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from contract.errors import DomainError, ErrorKind
from contract.identity import Identity, Role
from service_kit import authorization
from service_kit.authorization import ANYONE as ANYONE
from service_kit.authorization import Check as Check
from service_kit.authorization import Rule as Rule
from service_kit.authorization import allow as allow
from service_kit.authorization import caller as caller
from service_kit.authorization import denied as denied
from service_kit.authorization import own_country as own_country
from service_kit.revocation import RevocationList

log = logging.getLogger(__name__)


def certificate_not_found() -> DomainError:
    """Exactly what a use case answers for a certificate number that is not on file (status, reason,
    message, no metadata): also the answer to an importer about a certificate naming another importer,
    so that no importer can tell which certificate numbers exist."""
    return DomainError("CERTIFICATE_NOT_FOUND", "no such certificate", ErrorKind.NOT_FOUND)


def own_importer(getter: Callable[[Any], str]) -> Check:
    """The importer of record the answer names must be one the caller's certificate carries; if not,
    the certificate is as unknown to the caller as a number never issued."""

    def check(identity: Identity, message: Any) -> None:
        if getter(message) not in identity.importers:
            log.warning("%s asked about a certificate naming another importer of record: answered as not found", identity.subject)
            raise certificate_not_found()

    return check


_TRANSMISSION = "/ecert.v1.TransmissionService/"
_envelope_scope = own_country(lambda r: r.envelope.sender, lambda r: r.envelope.certificate.issuing_country)
_country_scope = own_country(lambda r: r.issuing_country)
_partner_reads = allow(Role.PARTNER, Role.RELAY, Role.CUSTOMS, Role.ADMIN, scope=_country_scope)

POLICY: dict[str, Rule] = {
    _TRANSMISSION + "SubmitCertificate": allow(Role.PARTNER, Role.RELAY, scope=_envelope_scope),
    _TRANSMISSION + "ValidateCertificate": allow(Role.PARTNER, Role.RELAY, scope=_envelope_scope),
    _TRANSMISSION + "GetCertificate": _partner_reads,
    _TRANSMISSION + "ListCertificates": _partner_reads,
    _TRANSMISSION + "GetActivityReport": _partner_reads,
    # A certificate's use: its issuing partner, the importer it names, customs.
    "/ecert.v1.MatchService/GetCertificateUsage": Rule(
        {Role.PARTNER: _country_scope, Role.RELAY: _country_scope, Role.IMPORTER: None, Role.CUSTOMS: None, Role.ADMIN: None},
        answers={Role.IMPORTER: own_importer(lambda r: r.importer_of_record)},
    ),
    # Claims are filed, matched and reversed by customs' own services.
    "/ecert.v1.MatchService/*": allow(Role.CUSTOMS, Role.ADMIN),
    # The transparency log's checkpoints and proofs are for every authenticated party; only a witness
    # hands in cosignatures.
    "/ecert.v1.LogService/AddCosignature": allow(Role.WITNESS),
    "/ecert.v1.LogService/*": ANYONE,
    # The utilization feed: a partner (or its relay) reads its own country's certificates, which the
    # use case scopes it to; customs and operators read every country's.
    "/ecert.v1.UsageService/WatchCertificateUsage": allow(Role.PARTNER, Role.RELAY, Role.CUSTOMS, Role.ADMIN, scope=_country_scope),
    # Quota status is public to every authenticated party.
    "/ecert.v1.QuotaService/*": ANYONE,
    "/grpc.health.v1.Health/*": ANYONE,
    # A simulated clock (test harnesses only) is driven by an operator.
    "/ecert.v1.ClockService/*": allow(Role.ADMIN),
    # The benchmarks' echo baseline (registered only by bench/, never by `ecert serve`).
    "/ecert.bench.v1.EchoService/*": ANYONE,
    "/grpc.reflection.v1alpha.ServerReflection/*": ANYONE,
    "/grpc.reflection.v1.ServerReflection/*": ANYONE,
}


def rule_for(method: str, policy: Mapping[str, Rule] = POLICY) -> Rule | None:
    return authorization.rule_for(method, policy)


def refusal_before_request(method: str, identity: Identity | None, policy: Mapping[str, Rule] = POLICY) -> DomainError | None:
    """The service's answer to a call whatever its request says (service_kit.authorization.refusal_before_request)."""
    return authorization.refusal_before_request(method, identity, policy)


class Authorizer(authorization.Authorizer):
    """The kit's authorizer, by default on the service's POLICY."""

    def __init__(self, policy: Mapping[str, Rule] = POLICY, *, revocations: RevocationList | None = None):
        super().__init__(policy, revocations=revocations)
