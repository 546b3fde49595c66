"""The contract every `Store` implementation passes (the `store` fixture runs each kind)."""

from __future__ import annotations

import pytest

from broker.store import Store
from tests.support import store_contract as contract

CASES = sorted(name for name in dir(contract) if name.startswith("test_"))


@pytest.mark.parametrize("case", CASES)
async def test_store_contract(store: Store, case: str) -> None:
    await getattr(contract, case)(store)
