"""What the broker tells operators and finance: logs, metrics, job events and cost reports.

`logging.py` (structured logs, secrets scrubbed), `events.py` (the observers of stored job changes),
`joblog.py` (a log line per job and attempt transition), `metrics.py` (the Prometheus metrics),
`provider_calls.py` (tracing every HTTP call to a provider), `wiring.py` (installs metrics and
observers on an app), `reports.py` (cost reports by provider, team, model and day) and
`reconciliation.py` (what providers reported against what was booked).

May import the top-level broker modules, `broker.store` and `pricing`; never `broker.jobs` (the
runner reports to it through `events.py`), `broker.api` or `broker.cli`.
"""
