"""The job runner: the scheduler, the steps of a job, and what the steps decide with.

`scheduler.py` takes due jobs from the store and runs one step each; `steps.py` says which step a
job takes next; `submit.py`, `poll.py` and `download.py` are the steps; `ending.py` ends attempts
and jobs; `costs.py` turns provider answers into money; `booking.py` stops a task at its provider
and books what it charged; `reconcile.py` follows unconfirmed charges up and sweeps unsettled
budgets beside the scheduler; `work.py` is a job held under a lease for one step; `context.py` what
the steps share; `acceptance.py` takes jobs in and cancels them for the API. What they decide with:
`routing.py` (the `Router`: quotes a request against the catalog, the policy, provider health and
capacity), `capacity.py` and `slots.py` (provider concurrency and rate limits, kept in the process),
`provider_health.py` (circuit breakers per provider), `redis_capacity.py` and `redis_circuits.py`
(the same slots, rate windows and breakers kept in Redis, where every replica sees them),
`budgets.py` (team budget windows), `hosted_inputs.py` (signed URLs for inputs providers fetch) and
`team_webhooks.py` (the signed webhooks to teams, sent from a store outbox by any replica).

No step sleeps. Every wait is a due time on the job: a submit the provider refused for now (429 with
its `Retry-After`, 5xx; `submit.py`), the next poll and a poll the provider rate-limited (`poll.py`),
a download to try again (`download.py`), a full provider (`submit.py`), a crashed step's back-off
(`scheduler.py`); a webhook's retry is a due time in the outbox. Inside a step there is only I/O,
and I/O that can outlast a lease runs under `JobWork.keep_lease`.

May import `adapters`, `pricing`, `policies`, the top-level broker modules, `broker.store` and
`broker.observability` (the events the steps emit and the metrics they count); never `broker.api`
or `broker.cli`.
"""
