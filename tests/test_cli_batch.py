"""`broker batch` against the real app: a file of 100 rows ends with one MP4 per row and a manifest
(on fake providers whose clips need no re-encoding: 100 emulated clips normalized to 720p take over two
minutes of this machine's CPU), a smaller file through the provider emulators, and file problems and
refused items named by the file's line."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from broker.cli import _parser
from broker.cli.exits import Exit
from broker.cli.remote import run_remote
from tests.support.deployment import GROWTH_KEY
from tests.support.sandbox_rig import Rig, sandbox_rig

rig = pytest.fixture(sandbox_rig)


async def cli(capsys: pytest.CaptureFixture[str], rig: Any, *argv: str) -> tuple[int, str, str]:
    """Run one `broker` command in a thread against `rig` (a sandbox rig, or a test client)."""
    server = rig.client if isinstance(rig, Rig) else rig
    url = str(server.make_url("")).rstrip("/")
    args = _parser().parse_args([*argv, "--url", url])
    code = await asyncio.to_thread(run_remote, args.remote, args, {"BROKER_API_KEY": GROWTH_KEY})
    out, err = capsys.readouterr()
    return code, out, err


async def _run_file(capsys: pytest.CaptureFixture[str], server: Any, tmp_path: Path, count: int) -> None:
    rows = ["prompt,duration_s,aspect_ratio"] + [f"harbour shot {i},5,16:9" for i in range(count)]
    (tmp_path / "jobs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "clips"
    started = time.monotonic()
    code, printed, err = await cli(
        capsys, server, "batch", str(tmp_path / "jobs.csv"), "--out", str(out), "--poll", "0.2"
    )
    took = time.monotonic() - started
    assert code == Exit.OK, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total"] == count and manifest["without_output"] == []
    assert sorted(p.name for p in out.glob("*.mp4")) == [f"row-{n:04d}.mp4" for n in range(1, count + 1)]
    assert all((out / o["file"]).stat().st_size == o["bytes"] for o in manifest["outputs"])
    assert f"{count}/{count} done" in printed and f"{count} of {count} MP4s" in printed
    print(f"{count}-row batch: {took:.1f} s")  # the measure (run with -s), not an assertion


async def test_a_csv_of_100_rows_ends_with_an_mp4_per_row_and_a_manifest(
    make_client: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    await _run_file(capsys, await make_client(workers=8), tmp_path, 100)


async def test_a_csv_through_the_emulators_ends_with_a_manifest(
    rig: Rig, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    await _run_file(capsys, rig, tmp_path, 4)


async def test_file_problems_name_the_line(
    rig: Rig, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad_cell = tmp_path / "bad.csv"
    bad_cell.write_text("prompt,duration_s\nfine,5\nnot fine,five\n")
    code, _, err = await cli(capsys, rig, "batch", str(bad_cell))
    assert code == Exit.USAGE and f"{bad_cell}:3: duration_s: 'five' is not a whole number" in err
    refused = tmp_path / "refused.jsonl"
    refused.write_text('{"prompt": "a"}\n\n{"prompt": "b", "duration_s": 99}\n')
    code, _, err = await cli(capsys, rig, "batch", str(refused))
    assert code == Exit.USAGE and f"{refused}:3: duration_s:" in err, err
    column = tmp_path / "column.csv"
    column.write_text("prompt,colour\nx,red\n")
    code, _, err = await cli(capsys, rig, "batch", str(column))
    assert code == Exit.USAGE and "unknown column 'colour'" in err


async def test_without_wait_it_prints_the_batch_id(
    rig: Rig, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jobs = tmp_path / "two.jsonl"
    jobs.write_text('{"prompt": "a"}\n{"prompt": "b", "priority": "interactive"}\n')
    code, printed, _ = await cli(capsys, rig, "batch", str(jobs))
    batch_id = printed.strip().splitlines()[-1]
    assert code == Exit.OK and batch_id.startswith("bat_")
    body: dict[str, Any] = await (
        await rig.client.get(f"/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {GROWTH_KEY}"})
    ).json()
    assert body["total"] == 2
