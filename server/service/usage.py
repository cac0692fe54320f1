"""The partner's utilization feed (issue 17, item 9): every use of a partner's certificates, read from
the transparency log's integrated claim entries in log-index order (server/domain/usage.py).

A feed reads pages of entries after its position, keeps those about the certificates in its scope and
moves its position past every entry it read, matching or not; so a stream that follows the log reads
each entry once, and a cursor (the last event's log index) resumes exactly after that event.
Entries are read only once integrated: the sequencer gives a batch its indices in one transaction,
after the batch before it committed, so no smaller index can appear after a larger one was read.
"""
from __future__ import annotations

import datetime as dt
import re

from contract.identity import Identity, Role
from contract.log_entry import LogEntry
from server.adapters.database import Database
from server.domain.errors import DomainError, ErrorKind, Finding
from server.domain.usage import REVERSAL, CertificateRef, UsageEvent, claim_id_of, parse_certificate, parse_cursor, usage_event
from server.service.unit_of_work import UnitOfWork

PAGE = 500  # log entries read per query
_COUNTRY = re.compile(r"[A-Z]{2}")
# Roles that see every country's certificates; partners and relays see those of their certificate's countries.
ALL_COUNTRIES_ROLES = frozenset({Role.CUSTOMS, Role.ADMIN})
OWN_COUNTRY_ROLES = frozenset({Role.PARTNER, Role.RELAY})


def _invalid(reason: str, field: str, description: str, **metadata: str) -> DomainError:
    return DomainError(reason, f"{field} {description}", ErrorKind.INVALID, [Finding(reason, field, description)], metadata=metadata)


class UsageFeed:
    """One stream's position in the log and its scope."""

    def __init__(self, database: Database, after: int, countries: frozenset[str] | None, not_before: dt.datetime | None):
        self.database = database
        self.after = after  # the last log index read
        self.countries = countries  # None: every country
        self.not_before = not_before
        self.caught_up = False  # the last page read reached the end of the integrated log

    def next_page(self, limit: int = PAGE) -> list[UsageEvent]:
        """The events among the next `limit` integrated claim entries (possibly none while the scan
        passes other countries' entries); `caught_up` says whether the log had no more."""
        if self.countries is not None and not self.countries:
            self.caught_up = True
            return []
        with UnitOfWork(self.database, write=False) as uow:
            rows = uow.log.claim_entries_after(self.after, limit)
            decoded: list[tuple[int, bytes, bytes, LogEntry]] = []
            for index, data, leaf in rows:
                try:
                    decoded.append((index, data, leaf, LogEntry.decode(data)))
                except ValueError:
                    continue  # a changed entry: `ecert audit verify` reports it; it is nobody's use
            # Reversals recorded before their entries named the certificate: read it from the claim.
            unnamed = [claim_id_of(e) for _, _, _, e in decoded if e.kind == REVERSAL and parse_certificate(e.facts.get("certificate")) is None]
            known = uow.log.claim_certificates(unnamed) if unnamed else {}
        self.caught_up = len(rows) < limit
        if rows:
            self.after = rows[-1][0]
        events: list[UsageEvent] = []
        for index, data, leaf, entry in decoded:
            row = known.get(claim_id_of(entry))
            event = usage_event(
                index, leaf, data, entry, countries=self.countries,
                known=CertificateRef(row[0], row[1], row[2]) if row else None, known_unit=row[3] if row else "",
            )
            if event is not None and (self.not_before is None or _instant(event.at) >= self.not_before):
                events.append(event)
        return events


def _instant(text: str) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


class UsageUseCases:
    def __init__(self, database: Database):
        self.database = database

    def scope(self, identity: Identity | None, country: str) -> frozenset[str] | None:
        """The issuing countries the caller's feed covers (None: all). A partner or relay sees only the
        countries its certificate carries; customs and operators all, or the one asked for."""
        if country and not _COUNTRY.fullmatch(country):
            raise _invalid("COUNTRY_MALFORMED", "issuing_country", "must be an ISO 3166-1 alpha-2 code such as MX", country=country)
        if identity is None or identity.role in ALL_COUNTRIES_ROLES:
            return frozenset({country}) if country else None
        if identity.role in OWN_COUNTRY_ROLES:
            if country and country not in identity.countries:
                raise DomainError("COUNTRY_NOT_CALLERS", f"the caller may not act for partner {country}", ErrorKind.PERMISSION,
                                  metadata={"country": country, "caller_countries": ",".join(sorted(identity.countries))})
            return frozenset({country}) if country else identity.countries
        raise DomainError("ROLE_NOT_ALLOWED", "this role may not read the utilization feed", ErrorKind.PERMISSION,
                          metadata={"role": identity.role.value if identity.role else ""})

    def open(self, cursor: str, countries: frozenset[str] | None, not_before: dt.datetime | None = None) -> UsageFeed:
        """A feed starting after `cursor` (from the start when empty). A cursor beyond the log (one this
        log never gave) is refused rather than waited on."""
        try:
            after = parse_cursor(cursor)
        except ValueError as exc:
            raise _invalid("CURSOR_MALFORMED", "cursor", str(exc), cursor=cursor[:64]) from None
        if after >= 0:
            with UnitOfWork(self.database, write=False) as uow:
                size = uow.log.size()
            if after >= size:
                raise _invalid("CURSOR_BEYOND_LOG", "cursor", f"names log index {after}, but the log holds {size} entries",
                               cursor=cursor, tree_size=str(size))
        return UsageFeed(self.database, after, countries, not_before)
