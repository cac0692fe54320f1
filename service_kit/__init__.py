"""The service kit: gRPC service plumbing any party may run (the service, the simulated relay and
gateway, the `ecert` command's witness).

    logs             request ids and structured (JSON) log lines
    tracing          OpenTelemetry spans for RPCs, W3C trace context in the metadata
    interceptor      the observability interceptor: request id, one log line and the metrics per call
    wrapping         handlers wrapped once per method; the pause (Idle) of a response stream
    peer             the caller of a mutual-TLS call (its certificate's identity)
    authorization    an authorizer of rules: roles, scopes, checks on answers
    revocation       the revocation list (CRL) of client certificates, followed while serving
    watched_files    what tells that a followed file changed
    error_status     errors to gRPC statuses with ErrorInfo (and BadRequest for findings)
    metrics_http     /metrics and /healthz beside the gRPC port

It imports the wire contract (contract/), third-party libraries and itself, never `server`,
`gateway_sim` or `client` (tests/unit/test_architecture.py); what is one party's alone stays there
(the service's metrics, quota page and POLICY; the relay's metrics and POLICY).
"""
