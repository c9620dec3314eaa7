"""How mcsync processes are observed: structured logs, Prometheus metrics, health endpoints."""
