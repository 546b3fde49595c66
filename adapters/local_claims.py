"""Who renders a local job when several replicas share one data directory.

A render is owned like a step: the replica that runs it holds an exclusive `flock` on
`<id>.lock` from its submit (or take-over) to its end, and writes the outcome to `<id>.done.json`
before it lets go. Another replica asked about the render reads the outcome if there is one; else it
tries the lock: held means a live replica is rendering (the render is running, nothing to do), free
means the owner died (the kernel dropped its lock) and this replica takes the render over from its
kept inputs. So no replica starts a render a live one owns, and each render writes its clip under a
name of its own, never into another's file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any


class RenderClaims:
    """The locks and outcome files of the renders under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._held: dict[str, int] = {}  # render id -> the open, locked descriptor of its lock file

    def _lock_path(self, render_id: str) -> Path:
        return self.root / f"{render_id}.lock"

    def _outcome_path(self, render_id: str) -> Path:
        return self.root / f"{render_id}.done.json"

    def take(self, render_id: str) -> bool:
        """Own the render; False while another live process owns it."""
        if render_id in self._held:
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path(render_id), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[render_id] = fd
        return True

    def release(self, render_id: str) -> None:
        fd = self._held.pop(render_id, None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    def finish(self, render_id: str, outcome: dict[str, Any]) -> None:
        """Write the render's outcome (atomically), then let the render go."""
        path = self._outcome_path(render_id)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(outcome))
        temporary.replace(path)
        self.release(render_id)

    def outcome(self, render_id: str) -> dict[str, Any] | None:
        """The outcome a finished render left, or None."""
        try:
            value = json.loads(self._outcome_path(render_id).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def forget(self, render_id: str) -> None:
        """The render's output was taken: drop its lock and outcome files."""
        self.release(render_id)
        for path in (self._outcome_path(render_id), self._lock_path(render_id)):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        for render_id in list(self._held):
            self.release(render_id)
