"""`broker batch FILE.csv|FILE.jsonl`: send a file's jobs as one batch (all or none), and with
`--wait` follow it with a progress bar, save one MP4 per row (`row-0001.mp4`, ... in `--out`) and
write the manifest beside them (`manifest.json`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from broker.cli.batch_file import Row, read_batch_file
from broker.cli.exits import CommandError, Exit
from broker.cli.progress import CLEAR_LINE
from broker.client import BrokerAPIError
from broker.sync_client import SyncBrokerClient

BAR_WIDTH = 30


def progress_line(batch: dict[str, Any]) -> str:
    """done/total as a bar, the counts that matter, and the cost so far against the estimate."""
    total, ended = batch["total"], batch["ended"]
    filled = BAR_WIDTH * ended // total if total else BAR_WIDTH
    counts = batch["counts"]
    said = "  ".join(
        f"{counts[s]} {s}" for s in ("running", "succeeded", "failed", "cancelled") if counts.get(s)
    )
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {ended}/{total} done  {said}  "
        f"cost {batch['cost_usd']} USD (estimate {batch['estimated_cost_usd']})"
    )


def _refusal(error: BrokerAPIError, path: Path, rows: list[Row]) -> BrokerAPIError | CommandError:
    """A refusal naming an item, said as the file's line."""
    details = error.details
    problems = details if isinstance(details, list) else [details] if isinstance(details, dict) else []
    for problem in problems:
        index = problem.get("index") if isinstance(problem, dict) else None
        if isinstance(index, int) and 0 <= index < len(rows):
            field = str(problem.get("field", "")).removeprefix(f"items[{index}].")
            message = problem.get("message") or error.message
            said = f"{field}: {message}" if field else error.message
            code = Exit.NO_ROUTE if error.code == "no_feasible_route" else Exit.USAGE
            return CommandError(f"{path}:{rows[index].line}: {said} ({error.status} {error.code})", code)
    return error


def _follow(
    client: SyncBrokerClient, batch: dict[str, Any], args: argparse.Namespace, out: TextIO
) -> dict[str, Any]:
    import time

    live, last, started = out.isatty(), "", time.monotonic()
    while True:
        line = progress_line(batch)
        if live:
            out.write(CLEAR_LINE + line)
        elif line != last:
            out.write(line + "\n")
        out.flush()
        last = line
        if batch["status"] == "ended":
            if live:
                out.write("\n")
            return batch
        if time.monotonic() - started > args.wait_timeout:
            raise TimeoutError(f"batch {batch['id']} still running after {args.wait_timeout:g} s")
        time.sleep(args.poll)
        batch = client.batch(batch["id"])


def _save(client: SyncBrokerClient, batch: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Each succeeded item's MP4 as row-NNNN.mp4 (its row in the file, from 1), and manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = client.batch_manifest(batch["id"])
    for output in manifest["outputs"]:
        path = folder / f"row-{output['index'] + 1:04d}.mp4"
        client.download(output["job_id"], path)
        output["file"] = path.name
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def batch(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    """Send the file as one batch; print its id; with --wait (or --out) follow it and save the MP4s."""
    rows = read_batch_file(args.file)
    try:
        sent = client.submit_batch([row.body for row in rows], idempotency_key=args.idempotency_key)
    except BrokerAPIError as exc:
        raise _refusal(exc, args.file, rows) from None
    print(
        f"{sent['id']}: {sent['total']} jobs accepted, estimated {sent['estimated_cost_usd']} USD",
        file=sys.stderr,
    )
    if not (args.wait or args.out):
        print(sent["id"])
        return Exit.OK
    try:
        ended = _follow(client, sent, args, sys.stdout)
    except TimeoutError as exc:
        print(
            f"broker: {exc}; it goes on (`broker batch-status` is GET /v1/batches/{sent['id']})",
            file=sys.stderr,
        )
        return Exit.TIMEOUT
    folder = args.out or Path(sent["id"])
    manifest = _save(client, ended, folder)
    counts = ended["counts"]
    print(
        f"{folder}: {len(manifest['outputs'])} of {ended['total']} MP4s and manifest.json,"
        f" cost {ended['cost_usd']} USD ({counts['failed']} failed, {counts['cancelled']} cancelled)"
    )
    if counts["succeeded"] == ended["total"]:
        return Exit.OK
    return Exit.JOB_FAILED if counts["failed"] else Exit.CANCELLED
