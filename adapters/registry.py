"""Provider name -> adapter factory, the one list of what the broker can speak to.

The local backend is imported only when its adapter is built: it pulls in torch, which a broker that
routes only to remote providers (or a test of one adapter) should not pay for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import cast

from adapters import doitong, fal, muvi, pixelapi, replicate, runway
from adapters.base import Adapter, AdapterContext, AdapterFactory


def _build_local(ctx: AdapterContext) -> Adapter:
    """Build the local torch backend's adapter, importing it on first use."""
    module = importlib.import_module("adapters.local")
    return cast(AdapterFactory, module.build)(ctx)


FACTORIES: Mapping[str, AdapterFactory] = MappingProxyType(
    {
        "runway": runway.build,
        "fal": fal.build,
        "muvi": muvi.build,
        "doitong": doitong.build,
        "pixelapi": pixelapi.build,
        "replicate": replicate.build,
        "local": _build_local,
    }
)


def factory_for(provider: str) -> AdapterFactory:
    """The factory for `provider`; KeyError naming the known providers if there is none."""
    try:
        return FACTORIES[provider]
    except KeyError:
        known = ", ".join(sorted(FACTORIES))
        raise KeyError(f"no adapter for provider {provider!r}; known: {known}") from None
