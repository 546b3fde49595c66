"""`broker serve` refuses mistakes at start: an unknown BROKER_* variable (a typo) or a bad log level is
exit 2 with one line; a second serve on one SQLite file is refused; the start logs the store it uses
(without credentials), teams without a key, a missing admin key and a Redis without appendonly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from broker.cli import main
from broker.cli.startup import lock_sqlite_store, shown_url, url_secrets
from broker.settings import Settings
from tests.support.deployment import REDIS_URL, TEST_ENV
from tests.support.procs import ROOT, clean_env, free_port

CONFIG = str(ROOT / "config.yaml")


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("BROKER_")]:
        monkeypatch.delenv(name)
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    yield
    structlog.reset_defaults()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    code = stopped.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("broker serve:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def logged(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    ("variable", "nearest"),
    [
        ("BROKER_STORE_ULR", "BROKER_STORE_URL"),
        ("BROKER_WEBHOOK_SECERT", "BROKER_WEBHOOK_SECRET"),
        ("BROKER_KEY_GROWHT", "BROKER_KEY_GROWTH"),
    ],
)
def test_a_typo_in_a_setting_stops_serve_naming_the_nearest(
    variable: str, nearest: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, "redis://127.0.0.1:6379/0")
    code, err = run(["serve", "--config", CONFIG], capsys)
    line = one_line(err)
    assert code == 2 and variable in line and f"did you mean {nearest}" in line
    assert not Path("data").exists()  # it stopped before opening any store of its own


def test_the_client_variables_are_not_typos(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BROKER_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("BROKER_API_KEY", "k")
    with socket.socket() as taken:  # stops right after the start-up checks
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, err = run(["serve", "--config", CONFIG, "--port", str(taken.getsockname()[1])], capsys)
    assert code == 1 and "address already in use" in one_line(err)


def test_a_bad_log_level_is_exit_2_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BROKER_LOG_LEVEL", "loud")
    code, err = run(["serve", "--config", CONFIG], capsys)
    line = one_line(err)
    assert code == 2 and "BROKER_LOG_LEVEL" in line and "debug, info, warning" in line


def test_the_start_logs_its_store_without_the_password_and_the_keys_it_lacks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BROKER_STORE_URL", "redis://:hunter2-secret@127.0.0.1:1/0")
    monkeypatch.setenv("BROKER_ADMIN_KEY", "")
    monkeypatch.delenv("BROKER_KEY_STUDIO")
    code, err = run(["serve", "--config", CONFIG], capsys)
    assert code == 1 and "hunter2" not in err
    events = {e["event"]: e for e in logged(err)}
    assert events["store"]["kind"] == "redis" and events["store"]["store_url"] == "redis://***@127.0.0.1:1/0"
    assert events["admin_key_missing"]["variable"] == "BROKER_ADMIN_KEY"
    assert [e["team"] for e in logged(err) if e["event"] == "team_without_key"] == ["studio"]


def test_the_start_reports_a_redis_without_appendonly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    appendonly = redis.Redis.from_url(REDIS_URL, decode_responses=True).config_get("appendonly")["appendonly"]
    monkeypatch.setenv("BROKER_STORE_URL", REDIS_URL)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, err = run(["serve", "--config", CONFIG, "--port", str(taken.getsockname()[1])], capsys)
    assert code == 1
    warned = [e for e in logged(err) if e["event"] == "store_not_durable"]
    assert len(warned) == (1 if appendonly != "yes" else 0), err


def test_store_passwords_are_secrets_to_the_redactor() -> None:
    settings = Settings(
        store_url="redis://user:pw-123456@h:1/0", sandbox_store_url="redis://:sb-654321@h:2/0"
    )
    assert url_secrets(settings) == ["pw-123456", "sb-654321"]
    assert url_secrets(Settings(store_url="sqlite:///data/broker.db")) == []


def test_shown_url_hides_credentials() -> None:
    assert shown_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert shown_url("redis://:pw@h:1/0") == "redis://***@h:1/0"
    assert shown_url("sqlite:///data/broker.db") == "sqlite:///data/broker.db"


def test_the_sqlite_lock_is_one_process_s_and_released_on_close(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/broker.db")
    held = lock_sqlite_store(settings)
    assert held is not None
    script = (
        "import sys; from broker.cli.startup import lock_sqlite_store, StoreLockTaken;"
        "from broker.settings import Settings\n"
        f"try: lock_sqlite_store(Settings(store_url='sqlite:///{tmp_path}/broker.db'))\n"
        "except StoreLockTaken as exc: print(exc); sys.exit(3)"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=clean_env({})
    )
    assert other.returncode == 3 and "already serves" in other.stdout, other
    held.close()
    again = lock_sqlite_store(settings)
    assert again is not None
    again.close()
    assert lock_sqlite_store(Settings(store_url=REDIS_URL)) is None


def test_a_second_serve_on_the_same_sqlite_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store_url = f"sqlite:///{tmp_path}/shared/broker.db"
    port = free_port()
    env = clean_env({**TEST_ENV, "BROKER_STORE_URL": store_url, "BROKER_DATA_DIR": str(tmp_path / "data")})
    first = subprocess.Popen(
        [sys.executable, "-m", "broker", "serve", "--config", CONFIG, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        monkeypatch.setenv("BROKER_STORE_URL", store_url)
        code, err = run(["serve", "--config", CONFIG, "--port", str(free_port())], capsys)
        line = one_line(err)
        assert code == 2 and f"pid {first.pid}" in line and "already serves" in line
    finally:
        first.terminate()
        first.wait(timeout=10)
    held = lock_sqlite_store(Settings(store_url=store_url))  # the lock went with the first process
    assert held is not None
    held.close()
