"""`/healthz` latency while the worst legal requests run: does one team's heavy body stall everyone?

Starts one `broker serve` (SQLite, the repository's config.yaml without the local backend, and no
provider keys: every job is parsed, validated, its image checked and stored, then refused 422 for want
of a route, so the run measures the broker's own intake work and nothing of a provider). Then:

1. baseline: `/healthz` probed every 10 ms for `--seconds`, nothing else running;
2. load: the same probe while `--loaders` processes each send, back to back, the heaviest request the
   broker accepts: a JSON body near the body limit (a ~10 MB image as a `data:` URI), a multipart
   body with a ~10 MB image and every field at its maximum, alternately;
3. refused floods: one multipart body of 200,000 tiny parts (under the size limit), timed.

It prints p50/p99/max of `/healthz` for both phases, the p99 as a ratio to the baseline, the heavy
requests served per second and their statuses, and the flood's answer time.

    python -m bench.hostile [--seconds 10] [--loaders 3] [--bodies both|json|multipart] [--log PATH]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TEAM_KEY = "bench-hostile-key-0123456789"
PROBE_INTERVAL_S = 0.01
KINDS = {"json": "application/json", "multipart": "multipart/"}


def noise_png(target_bytes: int) -> bytes:
    """A PNG of random pixels (incompressible) of about `target_bytes`."""
    side = int((target_bytes / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def heavy_requests() -> list[tuple[str, bytes]]:
    """(content type, body) of the two heaviest legal job requests."""
    png = noise_png(9_600_000)  # under BROKER_MAX_IMAGE_BYTES (10 MiB), its data URI under the body limit
    metadata = {f"k{i}": "v" * 40 for i in range(80)}  # just under the 4 KB metadata limit
    prompt = "a slow dolly shot over a harbour at dawn " * 48
    as_json = {
        "prompt": prompt[:2000],
        "image_url": "data:image/png;base64," + base64.b64encode(png).decode(),
        "metadata": metadata,
        "duration_s": 5,
    }
    boundary = "benchboundary"
    parts = [
        ("prompt", "text/plain; charset=utf-8", prompt[:2000].encode()),
        ("metadata", "application/json", json.dumps(metadata).encode()),
        ("duration_s", "text/plain", b"5"),
        ("image", "image/png", png),
    ]
    body = b""
    for name, content_type, data in parts:
        filename = '; filename="still.png"' if name == "image" else ""
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return [
        ("application/json", json.dumps(as_json).encode()),
        (f"multipart/form-data; boundary={boundary}", body),
    ]


def flood_body(parts: int = 200_000) -> tuple[str, bytes]:
    boundary = "f"
    part = b'--f\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{}\r\n'
    return f"multipart/form-data; boundary={boundary}", part * parts + b"--f--\r\n"


def post(port: int, content_type: str, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Authorization": f"Bearer {TEAM_KEY}", "Content-Type": content_type}
        conn.request("POST", "/v1/jobs", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def loader(port: int, index: int, stop_at: float, results: multiprocessing.Queue, kinds: str) -> None:  # type: ignore[type-arg]
    """Send the heavy requests back to back until `stop_at`; report their statuses."""
    requests = [r for r in heavy_requests() if kinds == "both" or r[0].startswith(KINDS[kinds])]
    statuses: Counter[int] = Counter()
    turn = index
    while time.time() < stop_at:
        content_type, body = requests[turn % len(requests)]
        statuses[post(port, content_type, body)] += 1
        turn += 1
    results.put(dict(statuses))


def probe(port: int, seconds: float) -> list[float]:
    """/healthz answer times (seconds), one probe every 10 ms, each on a fresh connection."""
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        conn.close()
        times.append(time.monotonic() - start)
        time.sleep(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - start)))
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def describe(name: str, times: list[float]) -> str:
    p50, p99, worst = (1000 * t for t in (statistics.median(times), percentile(times, 0.99), max(times)))
    return f"{name:<9} /healthz n={len(times):5d}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {worst:7.1f} ms"


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "BROKER_STORE_URL": f"sqlite:///{workdir}/broker.db",
        "BROKER_DATA_DIR": str(workdir / "data"),
        "BROKER_KEY_GROWTH": TEAM_KEY,
        "BROKER_LOG_LEVEL": "warning",
    }
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    # No local backend: its renders would compete for the CPU, and this run measures intake alone.
    config["providers"].pop("local")
    config["routes"] = [r for r in config["routes"] if r["provider"] != "local"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    args = [sys.executable, "-m", "broker", "serve", "--config", str(workdir / "config.yaml")]
    with (workdir / "serve.log").open("wb") as log:
        proc = subprocess.Popen([*args, "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            probe(port, 0.001)
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"broker did not start: {(workdir / 'serve.log').read_text()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--loaders", type=int, default=3, help="heavy requests running at once")
    parser.add_argument("--log", type=Path, help="keep the broker's log here")
    parser.add_argument(
        "--bodies", choices=["both", *KINDS], default="both", help="which heavy bodies to send"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        proc, port = start_broker(Path(tmp))
        try:
            probe(port, 1.0)  # warm up
            baseline = probe(port, args.seconds)
            results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
            stop_at = time.time() + args.seconds + 2
            loaders = [
                multiprocessing.Process(target=loader, args=(port, i, stop_at, results, args.bodies))
                for i in range(args.loaders)
            ]
            for process in loaders:
                process.start()
            time.sleep(2.0)  # the loaders build their bodies, then all are sending
            loaded = probe(port, args.seconds)
            statuses: Counter[int] = Counter()
            for _ in loaders:
                statuses.update(results.get(timeout=300))
            for process in loaders:
                process.join()
            content_type, flood = flood_body()
            start = time.monotonic()
            flood_status = post(port, content_type, flood)
            flood_s = time.monotonic() - start
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            if args.log is not None:
                shutil.copyfile(Path(tmp) / "serve.log", args.log)
    print(describe("idle", baseline))
    print(describe("loaded", loaded))
    ratio = percentile(loaded, 0.99) / percentile(baseline, 0.99)
    print(f"p99 loaded/idle: {ratio:.2f}x   ({args.loaders} heavy requests at once; target p99 <= 100 ms)")
    served = sum(statuses.values())
    print(f"heavy requests: {served} in ~{args.seconds + 2:.0f} s, statuses {dict(statuses)}")
    print(
        f"200,000-part flood ({len(flood) / 1e6:.1f} MB): answered {flood_status} in {flood_s * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
