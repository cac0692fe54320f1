"""The service's observability: its metrics (metrics.py), its operator endpoint (http.py, wiring.py).

Its logs and traces are the service kit's (service_kit/logs.py, service_kit/tracing.py), which every
party runs; they are named here too, so that `from server.observability import logs, tracing` is the
same module objects (one tracer, one request id per call) wherever it is written.
"""
from service_kit import logs as logs
from service_kit import tracing as tracing
