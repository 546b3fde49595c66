"""The deployment in force: config.yaml as loaded, and the key table built from it.

One mutable object per app, so a reload (SIGHUP) replaces both fields between two requests without
touching the started application's own state; every reader looks them up when it needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.auth import Authenticator
from broker.config import BrokerConfig


@dataclass
class Deployment:
    config: BrokerConfig
    auth: Authenticator
