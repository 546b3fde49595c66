"""`broker serve`, `demo` and `report` stop with one line a person can act on, and a non-zero status, for
a missing config, a bad setting, an unreachable store or a port in use; logs go to stderr."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from broker.cli import main
from broker.cli.sandbox import sandbox_settings
from broker.observability.logging import configure_logging
from broker.settings import Settings
from tests.support.deployment import TEST_ENV

CONFIG = str(Path(__file__).resolve().parents[1] / "config.yaml")
UNREACHABLE = "redis://:hunter2-secret@127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BROKER_STORE_URL", raising=False)
    yield
    structlog.reset_defaults()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    code = stopped.value.code
    return (code if isinstance(code, int) else 1), err


def one_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"broker {command}:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", [["serve"], ["demo"]])
def test_a_missing_config_is_one_line(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run([*command, *(["--config", "missing.yaml"] if command == ["serve"] else [])], capsys)
    assert code == 2
    assert "missing.yaml" in err or "config.yaml" in err
    assert "cannot read" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["serve", "demo", "report"])
def test_an_unreachable_store_is_one_line_without_its_password(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BROKER_STORE_URL", UNREACHABLE)
    monkeypatch.setenv("BROKER_CONFIG", CONFIG)
    # `broker report` asks a broker unless --store-url names a store to read; that store is unreachable.
    argv = [command, "--store-url", UNREACHABLE] if command == "report" else [command]
    code, err = run(argv, capsys)
    line = one_line(err, command)
    assert code == (7 if command == "report" else 1) and "unreachable" in line
    assert "hunter2" not in err


def test_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run(["serve", "--config", CONFIG, "--port", str(port)], capsys)
    assert code == 1 and "address already in use" in one_line(err, "serve")


def test_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BROKER_OUTBOUND_ALLOW", "https://images.internal/")
    code, err = run(["serve", "--config", CONFIG], capsys)
    assert code == 2 and "BROKER_OUTBOUND_ALLOW" in one_line(err, "serve")


def test_logs_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    structlog.get_logger("test").info("hello_stderr")
    captured = capsys.readouterr()
    assert "hello_stderr" in captured.err and captured.out == ""


def test_the_sandbox_keeps_its_own_store_and_data(tmp_path: Path) -> None:
    real = Settings(store_url=f"sqlite:///{tmp_path}/broker.db", data_dir=tmp_path / "data")
    sandbox = sandbox_settings(real)
    assert sandbox.data_dir == tmp_path / "data" / "sandbox"
    assert sandbox.store_url == f"sqlite:///{tmp_path}/data/sandbox/broker.db" != real.store_url
    on_redis = sandbox_settings(real.model_copy(update={"sandbox_store_url": "redis://r:6379/0"}))
    assert on_redis.store_url == "redis://r:6379/0" and on_redis.redis_prefix == "broker-sandbox"
    assert sandbox_settings(Settings()).store_url == "sqlite:///data/sandbox/broker.db"


def test_the_sandbox_hosts_inputs_at_its_own_url_unless_told_otherwise() -> None:
    own = sandbox_settings(Settings(host="0.0.0.0", port=8123))
    assert own.public_url == "http://127.0.0.1:8123"  # where its emulators reach it
    secret = own.input_signing_secret
    assert secret is not None and len(secret.get_secret_value()) == 64
    other = sandbox_settings(Settings(port=8123)).input_signing_secret
    assert other is not None and other.get_secret_value() != secret.get_secret_value()  # fresh each start
    given = Settings(public_url="https://broker.example", input_signing_secret="s" * 32, port=8123)
    kept = sandbox_settings(given)
    assert (
        kept.public_url == "https://broker.example"
        and kept.input_signing_secret == given.input_signing_secret
    )
    picked = sandbox_settings(Settings(port=0))  # a port chosen now, so the URL can name it
    assert picked.port != 0 and picked.public_url == f"http://127.0.0.1:{picked.port}"
