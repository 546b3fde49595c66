"""Bearer-key authentication: team keys and the admin key, compared as SHA-256 digests in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from broker.config import BrokerConfig, KeyRef
from broker.errors import Forbidden, Unauthorized


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a team, or the admin (who may act for every team)."""

    team: str | None
    admin: bool = False

    @property
    def name(self) -> str:
        return "admin" if self.admin else str(self.team)


def _digest(key: str) -> bytes:
    # surrogateescape: a header byte that is not UTF-8 (the edge refuses those) still digests, never raises.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _resolve(ref: KeyRef, env: Mapping[str, str]) -> bytes | None:
    if ref.api_key_sha256 is not None:
        return bytes.fromhex(ref.api_key_sha256)
    assert ref.api_key_env is not None
    value = env.get(ref.api_key_env)
    return _digest(value) if value else None


class Authenticator:
    """Maps a bearer key to an `Identity`. Keys without a value in the environment match nothing."""

    def __init__(self, config: BrokerConfig, env: Mapping[str, str] | None = None) -> None:
        source = os.environ if env is None else env
        self._keys: list[tuple[bytes, Identity]] = []
        if config.admin is not None and (digest := _resolve(config.admin, source)) is not None:
            self._keys.append((digest, Identity(team=None, admin=True)))
        for team in config.teams:
            if (digest := _resolve(team, source)) is not None:
                self._keys.append((digest, Identity(team=team.name)))

    def authenticate(self, header: str | None) -> Identity:
        """The identity behind an `Authorization: Bearer <key>` header (the scheme in any case, as HTTP
        has it); `Unauthorized` otherwise."""
        scheme, _, key = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("send Authorization: Bearer <your team key>")
        presented = _digest(key.strip())
        found: Identity | None = None
        # Compare against every key, so the time taken says nothing about which one matched.
        for digest, identity in self._keys:
            if hmac.compare_digest(presented, digest):
                found = identity
        if found is None:
            raise Unauthorized("the API key is not valid")
        return found


def require_admin(identity: Identity) -> None:
    if not identity.admin:
        raise Forbidden("this needs the admin key")
