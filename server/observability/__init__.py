"""Operability: Prometheus metrics, JSON logs with request ids, the metrics/health/quota HTTP endpoint."""
