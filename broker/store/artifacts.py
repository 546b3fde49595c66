"""The artifact store: uploaded images and finished MP4s as files under `BROKER_DATA_DIR`.

Files are written to a temporary name and renamed into place, so a crash never leaves a half-written
artifact under its final name. Several replicas share it by mounting one directory.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import av

from adapters.errors import OutputInvalid


@dataclass(frozen=True, slots=True)
class VideoInfo:
    sha256: str
    bytes: int
    width: int
    height: int
    duration_s: float


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def probe_video(path: Path) -> VideoInfo:
    """Size, dimensions and duration of an MP4; `OutputInvalid` if it is not a decodable video."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / 1_000_000
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise OutputInvalid(f"the provider's output is not a decodable video: {exc}") from exc
    return VideoInfo(_sha256_file(path), path.stat().st_size, width, height, round(duration, 3))


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "uploads"
        self.outputs = root / "outputs"
        self.partial = root / "partial"

    def open(self) -> None:
        for folder in (self.uploads, self.outputs, self.partial):
            folder.mkdir(parents=True, exist_ok=True)

    def save_upload(self, data: bytes, digest: str | None = None) -> str:
        """Store an uploaded image under its SHA-256 (`digest`, if the caller has it) and return it."""
        digest = digest or hashlib.sha256(data).hexdigest()
        final = self.uploads / digest
        if not final.exists():
            # Unique per writer: the same image may be uploaded twice at once (worker threads).
            temp = self.partial / f"upload-{digest}-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                temp.write_bytes(data)
                os.replace(temp, final)
            except BaseException:
                temp.unlink(missing_ok=True)  # a full disk leaves no partial file behind
                raise
        return digest

    def read_upload(self, digest: str) -> bytes:
        return (self.uploads / digest).read_bytes()

    def partial_path(self, attempt_id: str) -> Path:
        """Where an attempt's download is written before it is checked and moved into place."""
        return self.partial / f"{attempt_id}.mp4"

    def output_path(self, job_id: str) -> Path:
        return self.outputs / f"{job_id}.mp4"

    def commit_output(self, partial: Path, job_id: str) -> VideoInfo:
        """Check a downloaded MP4 and move it to the job's output; `OutputInvalid` if it is bad."""
        info = probe_video(partial)
        os.replace(partial, self.output_path(job_id))
        return info
