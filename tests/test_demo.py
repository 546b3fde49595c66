"""The README's first set-up command: `broker demo` animates the bundled sample and writes an MP4."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

from tests.support.paths import ROOT
from tests.support.procs import clean_env


@pytest.mark.timeout(300)
def test_broker_demo_writes_a_clip_of_the_sample_from_a_fresh_directory(tmp_path: Path) -> None:
    # Run where a new user would: a directory holding only the config, nothing else of the checkout.
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "broker", "demo", "--duration", "1"],
        cwd=tmp_path,
        env=clean_env({}),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["route"]["provider"] == "local"
    with av.open(str(tmp_path / "demo.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.frames == 24
    assert "wrote demo.mp4" in done.stderr
