"""The job runner: the scheduler (`scheduler.py`) and the steps of a job, one module each.

`steps.py` says which step a job takes next; `submit.py`, `poll.py` and `download.py` are the steps;
`ending.py` ends attempts and jobs; `costs.py` turns provider answers into money; `booking.py` stops
a task at its provider and books what it charged; `reconcile.py` follows unconfirmed charges up and
sweeps unsettled budgets beside the scheduler; `work.py` is a job held under a lease for one step;
`slots.py` is provider capacity; `context.py` what the steps share.
May import `adapters`, `pricing`, `policies`, `broker.schema`, `broker.store` and the broker modules
below the API; nothing here imports `broker.api` or the handlers.
"""
