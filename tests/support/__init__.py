"""What the tests share: fixtures' building blocks and helpers; no test module imports another.

`deployment` (team keys, the fake two-route config, auth headers), `api` (waiting on a job),
`adapters` (fake time, images, loopback fetch policy, adapter contexts), `fakes` (scripted fake
providers), `factories` (job records), `stores` (every store kind), `store_contract` (the cases every
store passes), `workload` and `sandbox_rig` (mixed workloads through the broker), `budget_rig`,
`reports`, `images`, `redis_proxy`, `procs` (broker processes), `browser`, `runway_sdk`, `paths`.
"""
