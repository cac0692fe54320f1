"""Who is calling: a party's role, partner countries and importer number, read from its certificate.

The development PKI (client/pki.py) writes them as subject-alternative-name URIs; production
certificates would carry the same URIs. One URI per fact, so a certificate can be read by any tool:

    urn:ecert:role:<partner|relay|customs|importer|admin|service|witness>
    urn:ecert:country:<ISO 3166-1 alpha-2>     partners: their country; relays: each country they carry
    urn:ecert:importer:<importer of record>    importers and brokers: the importer number they act for
"""
from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

URN_PREFIX = "urn:ecert:"


class Role(enum.Enum):
    PARTNER = "partner"  # a partner government's gateway
    RELAY = "relay"  # a network-service provider carrying partners' transmissions
    CUSTOMS = "customs"  # an internal customs service (matching, reversals)
    IMPORTER = "importer"  # an importer of record or its broker
    ADMIN = "admin"
    SERVICE = "service"  # the certification service's own server certificate
    WITNESS = "witness"  # a party other than customs that cosigns the transparency log's checkpoints


@dataclass(frozen=True)
class Identity:
    subject: str  # the certificate's common name, for logs and audit
    role: Role | None  # None: the certificate names no (known) role
    countries: frozenset[str] = frozenset()
    importers: frozenset[str] = frozenset()

    def to_uris(self) -> list[str]:
        uris = [f"{URN_PREFIX}role:{self.role.value}"] if self.role else []
        uris += [f"{URN_PREFIX}country:{c}" for c in sorted(self.countries)]
        uris += [f"{URN_PREFIX}importer:{i}" for i in sorted(self.importers)]
        return uris


def identity_from_uris(subject: str, uris: Iterable[str]) -> Identity:
    """Unknown or repeated role URIs make the identity role-less: ambiguity never grants access."""
    roles: set[str] = set()
    countries: set[str] = set()
    importers: set[str] = set()
    for uri in uris:
        if not uri.startswith(URN_PREFIX):
            continue
        kind, _, value = uri[len(URN_PREFIX):].partition(":")
        if not value:
            continue
        if kind == "role":
            roles.add(value)
        elif kind == "country":
            countries.add(value)
        elif kind == "importer":
            importers.add(value)
    role = None
    if len(roles) == 1:
        role = next((r for r in Role if r.value == next(iter(roles))), None)
    return Identity(subject, role, frozenset(countries), frozenset(importers))


@functools.lru_cache(maxsize=1024)
def identity_of_certificate(pem: bytes) -> Identity:
    """Read role, countries and importer numbers from a certificate's SAN URIs (the URIs above)."""
    certificate = x509.load_pem_x509_certificate(pem)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(names[0].value) if names else certificate.subject.rfc4514_string()
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return identity_from_uris(subject, uris)
