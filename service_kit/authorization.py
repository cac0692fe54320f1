"""Who may call what: the caller's role (from its client certificate) checked against a table of rules.

Any party that serves gRPC over mutual TLS (the service, the simulated relay) names its own POLICY:
a full method name ("/pkg.Service/Method") or a whole service ("/pkg.Service/*") mapped to a Rule,
the roles allowed and, per role, an optional check on the request (e.g. a partner may only touch its
own country's certificates). Anything not listed is refused.

The Authorizer wraps each method handler: the wrapped behaviour reads `context.auth_context()` before
the servicer runs, and refuses revoked client certificates (service_kit/revocation.py). What depends
on the role alone is answered by `refusal_before_request`, which a serving layer may also call as
soon as a call starts, before its request arrives (the service's server/api/serving.py).
Refusals are DomainErrors rendered by service_kit/error_status.status_for, like every other error.
Checks that need stored data belong to the use case, which gets the caller from `caller(context)`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_status import rpc_status

from contract.errors import DomainError, ErrorKind
from contract.identity import Identity, Role
from service_kit.error_status import status_for
from service_kit.peer import peer_identity
from service_kit.revocation import RevocationList
from service_kit.wrapping import WrappedHandlers

log = logging.getLogger(__name__)

Check = Callable[[Identity, Any], None]  # raises DomainError when a request (or answer) is out of the caller's scope


@dataclass(frozen=True)
class Rule:
    roles: Mapping[Role, Check | None] = field(default_factory=dict)
    anyone: bool = False  # any authenticated caller whose certificate names a role
    # Checks on a unary answer before it leaves, for scopes only the stored data reveal
    # (whose certificate is this?). The answer is withheld when they fail.
    answers: Mapping[Role, Check] = field(default_factory=dict)

    def check_answer(self, identity: Identity, response: Any) -> None:
        scope = self.answers.get(identity.role) if identity.role else None
        if scope is not None:
            scope(identity, response)

    def role_refusal(self, identity: Identity, method: str) -> DomainError | None:
        """The refusal that depends on the caller's role alone, whatever the request says."""
        if identity.role is None:
            return denied("ROLE_MISSING", "the client certificate names no ecert role", method, identity)
        if not self.anyone and identity.role not in self.roles:
            return denied("ROLE_NOT_ALLOWED", f"the {identity.role.value} role may not call this method", method, identity)
        return None

    def check(self, identity: Identity, request: Any, method: str) -> None:
        refusal = self.role_refusal(identity, method)
        if refusal is not None:
            raise refusal
        if self.anyone or identity.role is None:
            return
        scope = self.roles[identity.role]
        if scope is not None:
            if request is None:  # a client-streaming call cannot be scoped before it runs
                raise denied("ROLE_NOT_ALLOWED", "this method cannot be scoped to the caller", method, identity)
            scope(identity, request)


def allow(*roles: Role, scope: Check | None = None, scoped: tuple[Role, ...] = (Role.PARTNER, Role.RELAY)) -> Rule:
    """The roles allowed; `scope` applies to those of them listed in `scoped`."""
    return Rule({role: (scope if role in scoped else None) for role in roles})


ANYONE = Rule(anyone=True)


def denied(reason: str, message: str, method: str, identity: Identity | None, **metadata: str) -> DomainError:
    meta = {"method": method, **metadata}
    if identity is not None:
        meta["role"] = identity.role.value if identity.role else ""
    return DomainError(reason, message, ErrorKind.PERMISSION, metadata=meta)


def own_country(*getters: Callable[[Any], str]) -> Check:
    """Every country the request names must be one the caller's certificate carries."""

    def check(identity: Identity, request: Any) -> None:
        for getter in getters:
            country = getter(request)
            if country and country not in identity.countries:
                raise DomainError(
                    "COUNTRY_NOT_CALLERS",
                    f"the caller may not act for partner {country}",
                    ErrorKind.PERMISSION,
                    metadata={"country": country, "caller_countries": ",".join(sorted(identity.countries))},
                )

    return check


def rule_for(method: str, policy: Mapping[str, Rule]) -> Rule | None:
    return policy.get(method) or policy.get(method.rsplit("/", 1)[0] + "/*")


def caller(context: grpc.ServicerContext) -> Identity | None:
    """The authenticated caller; None on a plaintext (development) server, where nothing is restricted."""
    return peer_identity(context)


def refusal_before_request(method: str, identity: Identity | None, policy: Mapping[str, Rule]) -> DomainError | None:
    """What the Authorizer answers whatever the request says (no certificate, no role, a role the method
    does not admit): a serving layer (the service's server/api/serving.py) may answer it as soon as the call starts,
    before the request arrives and before any worker is taken."""
    if identity is None:
        return DomainError(
            "CLIENT_CERTIFICATE_REQUIRED", "a client certificate is required", ErrorKind.UNAUTHENTICATED, metadata={"method": method}
        )
    rule = rule_for(method, policy)
    if rule is None:
        return denied("METHOD_NOT_ALLOWED", "no role may call this method", method, identity)
    return rule.role_refusal(identity, method)


class Authorizer(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, policy: Mapping[str, Rule], *, revocations: RevocationList | None = None):
        self.policy = policy
        self.revocations = revocations  # revoked client certificates (service_kit/revocation.py)
        self._guarded = WrappedHandlers(self._guard)

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]  # grpc interceptor hook: grpc is untyped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._guarded(handler, handler_call_details.method)

    def _guard(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The method's handler behind its rule; the caller's identity is read from each call."""
        rule = rule_for(method, self.policy)

        def guard(request: Any, context: grpc.ServicerContext) -> Identity:
            identity = peer_identity(context)
            try:
                refusal = refusal_before_request(method, identity, self.policy)
                if refusal is not None:
                    raise refusal
                if self.revocations is not None and (revoked := self.revocations.refusal(context, method)) is not None:
                    raise revoked
                assert rule is not None and identity is not None
                rule.check(identity, request, method)
            except DomainError as error:
                refuse(error, context, identity)
            return identity  # type: ignore[return-value]  # refuse() aborts the call, so identity is set here

        def answer_guard(identity: Identity, response: Any, context: grpc.ServicerContext) -> None:
            try:
                if rule is not None and response is not None:
                    rule.check_answer(identity, response)
            except DomainError as error:
                refuse(error, context, identity)

        def refuse(error: DomainError, context: grpc.ServicerContext, identity: Identity | None) -> None:
            log.warning("refused %s to %s: %s", method, identity.subject if identity else "anonymous", error.reason)
            context.abort_with_status(rpc_status.to_status(status_for(error)))

        return _guarded(handler, guard, answer_guard)


def _guarded(
    handler: grpc.RpcMethodHandler,
    guard: Callable[[Any, grpc.ServicerContext], Identity],
    answer_guard: Callable[[Identity, Any, grpc.ServicerContext], None],
) -> grpc.RpcMethodHandler:
    serializers = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        def unary_unary(request, context):  # type: ignore[no-untyped-def]  # a grpc method handler: grpc is untyped
            identity = guard(request, context)
            response = inner_uu(request, context)
            answer_guard(identity, response, context)
            return response

        return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        def unary_stream(request, context):  # type: ignore[no-untyped-def]  # a grpc method handler: grpc is untyped
            guard(request, context)
            return inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, **serializers)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        def stream_unary(requests, context):  # type: ignore[no-untyped-def]  # a grpc method handler: grpc is untyped
            guard(None, context)
            return inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **serializers)
    inner_ss = handler.stream_stream

    def stream_stream(requests, context):  # type: ignore[no-untyped-def]  # a grpc method handler: grpc is untyped
        guard(None, context)
        return inner_ss(requests, context)

    return grpc.stream_stream_rpc_method_handler(stream_stream, **serializers)
