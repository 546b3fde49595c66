"""Provider adapters: one module per provider, all speaking the small protocol in `adapters.base`."""
