"""The job runner's parts: scheduling, routing, capacity, provider health, budgets, team webhooks."""
