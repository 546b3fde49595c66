"""The error tree drawn in broker/errors.py is the tree in the code: every `BrokerError` with its
code, the status the middleware gives it and its parent, and one `OutputInvalid`."""

from __future__ import annotations

import re

import adapters.errors
import adapters.http
import adapters.images
import adapters.polling
import broker.errors
import broker.jobs.output_media
import broker.store.artifacts
import broker.store.base
from broker.api.middleware import status_for
from broker.schema import BrokerError

MODULES = (broker.errors, broker.store.base, adapters.errors, adapters.images, adapters.polling)
LINE = re.compile(r"^(?P<indent>[ │]*)(?:[├└]── )?(?P<name>\w+)\s+(?P<code>[a-z_]+) (?P<status>\d{3})\b")


def drawn() -> dict[str, tuple[str, int, str | None]]:
    """name -> (code, status, parent) as the docstring draws them."""
    tree: dict[str, tuple[str, int, str | None]] = {}
    parents: list[tuple[int, str]] = []
    assert broker.errors.__doc__ is not None
    for line in broker.errors.__doc__.splitlines():
        match = LINE.match(line.removeprefix("    "))
        if not match:
            continue
        depth = len(match["indent"])
        while parents and parents[-1][0] >= depth:
            parents.pop()
        tree[match["name"]] = (match["code"], int(match["status"]), parents[-1][1] if parents else None)
        parents.append((depth, match["name"]))
    return tree


def test_every_broker_error_is_drawn_with_its_code_status_and_parent() -> None:
    tree = drawn()
    classes = {
        name: cls
        for module in MODULES
        for name, cls in vars(module).items()
        if isinstance(cls, type) and issubclass(cls, BrokerError) and cls.__module__ == module.__name__
    }
    assert len(classes) > 20
    for name, cls in classes.items():
        parent = cls.__mro__[1].__name__
        assert tree[name] == (cls.code.value, status_for(cls), parent), name
    assert tree["BrokerError"] == ("internal", 500, None)
    assert set(tree) == {*classes, "BrokerError"}


def test_one_output_invalid_for_downloads_and_the_artifact_store() -> None:
    assert adapters.http.OutputInvalid is adapters.errors.OutputInvalid
    assert broker.store.artifacts.OutputInvalid is adapters.errors.OutputInvalid
    assert broker.jobs.output_media.OutputInvalid is adapters.errors.OutputInvalid
    assert issubclass(adapters.errors.OutputInvalid, adapters.errors.ProviderError)
