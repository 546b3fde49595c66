"""Benchmark the quote engine: quotes per second and per-quote latency, as the catalog grows.

Runs `pricing.quote.quote` over the real catalog in `config.yaml` and over synthetic catalogs of 100
and 1,000 routes (copies of the real routes under new model names, so every filter still has work),
with a mix of requests: image and text, several durations, audio on and off, with and without
constraints. One core, one process; run it on an idle machine:

    python -m bench.quote [--config config.yaml] [--quotes 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

from broker.config import load_config
from broker.schema import JobRequest
from pricing.catalog import RouteSpec
from pricing.quote import quote

IMAGE = "https://example.com/still.png"


def requests() -> list[JobRequest]:
    """A fixed mix of requests that exercises every filter."""
    shapes: list[dict[str, object]] = [
        {"image_url": IMAGE},
        {"image_url": IMAGE, "constraints": {"min_quality": "standard"}},
        {"image_url": IMAGE, "duration_s": 7, "aspect_ratio": "9:16"},
        {"image_url": IMAGE, "duration_s": 8, "audio": True, "resolution": "1080p"},
        {"image_url": IMAGE, "seed": 7, "constraints": {"max_cost_usd": "0.30", "max_latency_s": 100}},
        {"duration_s": 5},
        {"duration_s": 8, "audio": True, "constraints": {"providers": ["runway", "fal"]}},
        {"duration_s": 10, "resolution": "1080p", "constraints": {"models": ["gen4.5", "fal-ai/veo3"]}},
    ]
    return [JobRequest.model_validate({"prompt": "a slow pan", **shape}) for shape in shapes]


def synthetic_catalog(real: Sequence[RouteSpec], size: int) -> list[RouteSpec]:
    """`size` routes cycled from the real catalog, each under its own model name."""
    routes = []
    for index, template in zip(range(size), cycle(real), strict=False):
        routes.append(template.model_copy(update={"model": f"{template.model}~{index}"}))
    return routes


@dataclass(frozen=True)
class Result:
    label: str
    routes: int
    quotes: int
    per_second: float
    p50_us: float
    p90_us: float
    p99_us: float

    def line(self) -> str:
        """One row of the report."""
        return (
            f"{self.label:<15} {self.routes:>6} {self.quotes:>8} {self.per_second:>12,.0f} "
            f"{self.p50_us:>9.1f} {self.p90_us:>9.1f} {self.p99_us:>9.1f}"
        )


def measure(
    label: str, catalog: Sequence[RouteSpec], quotes: int, unavailable: dict[str, str], *, as_json: bool
) -> Result:
    """Time `quotes` quotes, one at a time, after a short warm-up; `as_json` also writes the API body."""
    mix = requests()
    for request in mix * 10:
        quote(request, catalog, unavailable=unavailable).to_json()
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = clock()
    for index in range(quotes):
        request = mix[index % len(mix)]
        before = clock()
        result = quote(request, catalog, constraints=request.constraints, unavailable=unavailable)
        if as_json:
            result.to_json()
        samples.append(clock() - before)
    elapsed_s = (clock() - started) / 1e9
    cuts = statistics.quantiles(samples, n=100)
    return Result(label, len(catalog), quotes, quotes / elapsed_s, cuts[49] / 1e3, cuts[89] / 1e3,
                  cuts[98] / 1e3)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print one row per catalog."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--quotes", type=int, default=20_000, help="quotes per catalog")
    args = parser.parse_args(argv)
    real = load_config(args.config).routes
    # As in a deployment without a doitong key: one provider the broker reports as unavailable.
    unavailable = {"doitong": "provider doitong has no API key configured (DOITONG_API_KEY)"}
    print(f"{'catalog':<15} {'routes':>6} {'quotes':>8} {'quotes/s':>12} {'p50 µs':>9} {'p90 µs':>9} "
          f"{'p99 µs':>9}")
    catalogs = [("real", real), ("synthetic", synthetic_catalog(real, 100)),
                ("synthetic", synthetic_catalog(real, 1000))]
    for as_json in (False, True):
        # Without the body, a quote's rejection reasons stay unwritten (the runner's case); with it,
        # every reason is formatted (POST /v1/quotes's case).
        for label, catalog in catalogs:
            count = args.quotes if len(catalog) <= 100 else max(args.quotes // 10, 1000)
            name = f"{label}+json" if as_json else label
            print(measure(name, catalog, count, unavailable, as_json=as_json).line(), flush=True)


if __name__ == "__main__":
    main()
