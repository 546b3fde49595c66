"""The HTTP API: the aiohttp application and everything that speaks HTTP.

`app.py` builds the application (resources under typed keys, opened and closed in `cleanup_ctx`, and
every route registered in one place); `middleware.py` maps errors to statuses and envelopes;
`intake.py` reads and checks request bodies; `common.py` is what handlers share (the caller's
identity, JSON answers). One handler module per resource: `jobs.py`, `pricing.py` (`/v1/pricing`,
`/v1/quotes`), `policies.py`, `reports.py`, `callbacks.py` (provider webhooks), `inputs.py` (hosted
inputs), `providers.py`, `health.py` (`/healthz`, `/readyz`), `metrics.py` (`/metrics`),
`openapi.py`, `dashboard.py` (with `static/`); `provider_status.py` gathers each provider's health
for `providers.py`, `metrics.py` and the dashboard.

May import everything below it: the top-level broker modules, `broker.jobs`, `broker.store`,
`broker.observability`, `adapters`, `pricing` and `policies`. Nothing but `broker.cli` imports it
(tests/test_import_direction.py holds this).
"""
