"""The test deployment: team keys, a two-route fake config, fast sleep, auth headers, Redis URL."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from broker.config import BrokerConfig, parse_config

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

GROWTH_KEY = "growth-key-0123456789"
STUDIO_KEY = "studio-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
TEST_ENV = {"BROKER_KEY_GROWTH": GROWTH_KEY, "BROKER_KEY_STUDIO": STUDIO_KEY, "BROKER_ADMIN_KEY": ADMIN_KEY}


def fake_route(
    provider: str, model: str, usd_per_video: str, latency: int = 30, **extra: Any
) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "modes": ["image_to_video", "text_to_video"],
        "durations": {"min": 1, "max": 10},
        "aspect_ratios": ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"],
        "resolutions": ["720p", "1080p"],
        "features": ["seed", "camera_fixed"],
        "quality": "standard",
        "expected_latency_s": latency,
        "price": {
            "unit": "credits_per_video",
            "amount": str(int(float(usd_per_video) * 100)),
            "usd_per_credit": "0.01",
        },
        **extra,
    }


def fake_config(**policies: Any) -> BrokerConfig:
    return parse_config(
        {
            "providers": {"cheap": {}, "dear": {}},
            "routes": [fake_route("cheap", "c1", "0.10"), fake_route("dear", "d1", "0.50")],
            "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
            "teams": [
                {"name": "growth", "api_key_env": "BROKER_KEY_GROWTH", "policy": "growth"},
                {"name": "studio", "api_key_env": "BROKER_KEY_STUDIO"},
            ],
            "policies": {"default": {"max_attempts": 3}, "growth": policies.get("growth", {})},
        },
        "test-config",
    )


async def fast_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def auth(key: str = GROWTH_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
