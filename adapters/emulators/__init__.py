"""Faithful aiohttp emulators of the remote video providers, for tests and `broker serve --sandbox`.

Shared parts: `emulator.py` (per-provider state: keys, tasks, faults, recorded requests, webhooks),
`app.py` (the middleware that records, injects faults and authenticates; output downloads),
`admin.py` (the /_emulator control API), `faults.py`, `recorder.py`, `tasks.py` (the render timeline
on an injected clock), `media.py` (tiny real H.264 MP4s), `webhooks.py` (delivery and what each
provider signs). Protocols: `runway.py`, `fal.py`, `muvi.py`, `doitong.py`, `pixelapi.py`,
`replicate.py`.
`sandbox.py` starts them all on loopback ports; `python -m adapters.emulators <provider>` runs one.
Nothing in the broker's runtime path imports this package except the sandbox mode.
"""
