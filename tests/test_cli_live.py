"""Every CLI command against a live sandbox: `broker serve --sandbox` in its own process on a Redis
store with a key prefix (no provider settings, no public URL, no signing secret), and each command run
as a user runs it (`broker.cli.main`, with --url and --key).

The module shares one sandbox; tests that change a policy put it back."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from broker.cli import _parser, main
from broker.cli.exits import Exit
from broker.cli.watch import jobs as watch_jobs
from broker.schema import Job
from broker.store.redis import RedisStore
from broker.sync_client import SyncBrokerClient
from tests.support.deployment import REDIS_URL
from tests.support.procs import ROOT, Proc, clean_env, free_port
from tests.support.redis_proxy import fresh_prefix

SAMPLE = ROOT / "local_backend" / "assets" / "sample.png"
GROWTH, STUDIO, ADMIN = (
    "live-growth-key-0123456789",
    "live-studio-key-0123456789",
    "live-admin-key-0123456789",
)
PROVIDERS = ("runway", "fal", "muvi", "doitong", "pixelapi", "replicate", "local")
# Replicate's one priced route (minimax/video-01) renders 6 s clips only.
FLAGS = {"replicate": ("--duration", "6")}


@dataclass
class Live:
    url: str
    prefix: str  # the sandbox's Redis prefix (BROKER_REDIS_PREFIX + "-sandbox")
    env: dict[str, str]
    proc: Proc
    tmp: Path

    def client(self, key: str = STUDIO) -> SyncBrokerClient:
        return SyncBrokerClient(self.url, key)


@dataclass
class Ran:
    code: int
    out: str
    err: str


def _ready(url: str, proc: Proc) -> None:
    for _ in range(600):
        assert proc.alive, proc.log_tail()
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the sandbox did not get ready: {proc.log_tail()}")


def _drop_keys(prefix: str) -> None:
    async def drop() -> None:
        store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        await store.open()
        try:
            await store.drop_all_keys()
        finally:
            await store.close()

    asyncio.run(drop())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("live")
    prefix = fresh_prefix()
    env = clean_env(
        {
            "BROKER_KEY_GROWTH": GROWTH,
            "BROKER_KEY_STUDIO": STUDIO,
            "BROKER_ADMIN_KEY": ADMIN,
            "BROKER_DATA_DIR": str(tmp / "data"),
            "BROKER_SANDBOX_STORE_URL": REDIS_URL,
            "BROKER_REDIS_PREFIX": prefix,
        }
    )
    port = free_port()
    args = [sys.executable, "-m", "broker", "serve", "--sandbox", "--port", str(port)]
    proc = Proc("sandbox", args, env, tmp / "sandbox.log")
    url = f"http://127.0.0.1:{port}"
    try:
        _ready(url, proc)
        yield Live(url, f"{prefix}-sandbox", env, proc, tmp)
    finally:
        proc.stop()
        _drop_keys(f"{prefix}-sandbox")


def cli(capsys: pytest.CaptureFixture[str], live: Live, *argv: str, key: str = STUDIO) -> Ran:
    """`broker <argv> --url <sandbox> --key <key>`, run as the console script runs it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--url", live.url, "--key", key])
    out, err = capsys.readouterr()
    code = stopped.value.code
    return Ran(code if isinstance(code, int) else 1, out, err)


def _finished(live: Live, job_id: str, key: str = STUDIO) -> Job:
    with live.client(key) as client:
        return client.wait(job_id, poll_s=0.2, timeout_s=120)


def _submitted(capsys: pytest.CaptureFixture[str], live: Live, *flags: str, key: str = STUDIO) -> str:
    ran = cli(capsys, live, "submit", str(SAMPLE), "--prompt", "slow push in", *flags, key=key)
    assert ran.code == Exit.OK, ran.err
    return ran.out.strip()


def test_a_fresh_sandbox_routes_an_uploaded_image_to_each_of_the_seven_providers(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = {
        provider: _submitted(capsys, live, "--provider", provider, *FLAGS.get(provider, ()))
        for provider in PROVIDERS
    }
    for provider, job_id in jobs.items():
        job = _finished(live, job_id)
        assert job.status.value == "succeeded", (provider, job.error, live.proc.log_tail())
        assert [a.provider for a in job.attempts] == [provider]
        assert job.cost_usd.micros > 0 and job.output is not None
    out = live.tmp / "doitong.mp4"
    saved = cli(capsys, live, "download", jobs["doitong"], "-o", str(out))
    assert saved.code == Exit.OK, saved.err
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    # doitong priced at its emulator's figure: 10 credits/s x 5 s at 0.005 USD a credit.
    with live.client() as client:
        assert str(client.get(jobs["doitong"]).cost_usd) == "0.250000"


def test_providers_lists_every_provider_with_its_health(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = cli(capsys, live, "providers")
    assert ran.code == Exit.OK, ran.err
    lines = ran.out.splitlines()
    assert lines[0].split()[:3] == ["provider", "routable", "circuit"]
    assert {line.split()[0] for line in lines[1:]} == set(PROVIDERS)
    as_json = json.loads(cli(capsys, live, "providers", "--json").out)["providers"]
    assert {p["provider"]: p["routable"] for p in as_json} == dict.fromkeys(PROVIDERS, True)
    # Every provider served the first test's job; the local backend's render counts though no HTTP.
    assert all(p["requests"] >= 1 for p in as_json), as_json


def test_quote_feasible_shows_only_the_routes_that_can_take_the_job(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    full = cli(capsys, live, "quote", str(SAMPLE), "--prompt", "x", "--provider", "muvi")
    narrow = cli(capsys, live, "quote", str(SAMPLE), "--prompt", "x", "--provider", "muvi", "--feasible")
    assert full.code == narrow.code == Exit.OK, narrow.err
    assert "rejected:" in full.out and "rejected:" not in narrow.out
    routes = [
        line.split() for line in narrow.out.splitlines()[1:] if line.strip() and not line.startswith("(")
    ]
    assert routes and all("muvi" in row for row in routes)
    rejected = len(full.out.split("\nrejected:\n")[1].splitlines())  # one line per rejected route
    assert narrow.out.splitlines()[-1] == f"({rejected} routes cannot take it: drop --feasible to see why)"
    as_json = json.loads(cli(capsys, live, "quote", "--prompt", "x", "--feasible", "--json").out)
    assert as_json["rejected"] == [] and as_json["routes"]


def test_jobs_watch_redraws_the_list(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = _submitted(capsys, live, "--provider", "pixelapi")
    args = _parser().parse_args(["jobs", "--watch", "--interval", "0.5", "--url", live.url, "--key", STUDIO])
    screen = io.StringIO()
    pauses: list[float] = []
    with live.client() as client:
        code = watch_jobs(client, args, out=screen, sleep=pauses.append, rounds=3)
    assert code == Exit.OK and pauses == [0.5, 0.5]
    frames = [frame for frame in screen.getvalue().split("Ctrl-C stops)\n") if frame][1:]
    assert len(frames) == 3 and all(job_id in frame for frame in frames)

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    with live.client() as client:  # Ctrl-C is how a watch ends: exit 0, not 130
        assert watch_jobs(client, args, out=io.StringIO(), sleep=ctrl_c) == Exit.OK
    streamed = io.StringIO()
    json_args = _parser().parse_args(["jobs", "--watch", "--json", "--url", live.url, "--key", STUDIO])
    with live.client() as client:
        watch_jobs(client, json_args, out=streamed, sleep=lambda s: None, rounds=2)
    documents = [json.loads(line) for line in streamed.getvalue().splitlines()]
    assert len(documents) == 2 and documents[0]["jobs"][0]["id"] == job_id
    listed = cli(capsys, live, "jobs", "--limit", "3")
    assert listed.code == Exit.OK and listed.out.splitlines()[1].split()[0] == job_id


def test_events_show_the_jobs_timeline(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = _submitted(capsys, live, "--provider", "fal")
    job = _finished(live, job_id)
    ran = cli(capsys, live, "events", job_id)
    assert ran.code == Exit.OK, ran.err
    events = [line.split("  ")[1].strip() for line in ran.out.splitlines()[2:]]
    assert events[0] == "accepted" and events[-1] == "job succeeded"
    assert "attempt 1 started" in ran.out and "attempt 1 succeeded" in ran.out
    body = json.loads(cli(capsys, live, "events", job_id, "--json").out)
    assert [e["event"] for e in body["events"]] == [
        "accepted",
        "attempt 1 started",
        "attempt 1 succeeded",
        "job succeeded",
    ]
    assert job.completed_at is not None and body["events"][-1]["at"] == job.completed_at.isoformat()
    assert cli(capsys, live, "events", "job_nope").code == Exit.NOT_FOUND


def test_status_cancel_and_download_say_where_the_job_stands(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _submitted(capsys, live, "--provider", "muvi")  # renders for 6 s
    shown = cli(capsys, live, "status", job_id)
    assert shown.code == Exit.OK and shown.out.startswith(f"{job_id}  ")
    cancelled = cli(capsys, live, "cancel", job_id)
    assert cancelled.code == Exit.OK
    assert cancelled.out.startswith((f"{job_id}: cancel requested;", f"{job_id}: cancelled")), cancelled.out
    assert _finished(live, job_id).status.value == "cancelled"
    again = cli(capsys, live, "cancel", job_id)
    assert again.code == Exit.USAGE and "already ended: cancelled (409 conflict)" in again.err
    nothing = cli(capsys, live, "download", job_id, "-o", str(live.tmp / "never.mp4"))
    assert nothing.code == Exit.CANCELLED and "ended cancelled" in nothing.err and "no output" in nothing.err
    assert "yet" not in nothing.err and not (live.tmp / "never.mp4").exists()


def test_flag_errors_name_the_flag_and_the_known_values(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = cli(capsys, live, "quote", "--prompt", "x", "--provider", "acme")
    assert unknown.code == Exit.USAGE
    assert (
        "--provider: unknown provider 'acme'; known: doitong, fal, local, muvi, pixelapi, replicate, runway"
        in unknown.err
    )
    assert "constraints." not in unknown.err
    with pytest.raises(SystemExit) as stopped:
        main(["submit", "--prompt", "x", "--max-cost", "abc", "--url", live.url, "--key", STUDIO])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "--max-cost" in err and "not an amount in USD" in err
    big = live.tmp / "huge.png"
    big.write_bytes(SAMPLE.read_bytes() + b"\0" * (11 << 20))
    with live.client() as client:
        before = len(client.list(limit=200)[0])
    refused = cli(capsys, live, "submit", str(big), "--prompt", "x")
    assert refused.code == Exit.USAGE
    assert "the broker takes images up to 10.0 MiB (10485760 bytes)" in refused.err
    with live.client() as client:
        assert len(client.list(limit=200)[0]) == before  # refused before any upload


def test_budgets_show_each_teams_windows(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    every = cli(capsys, live, "budgets", key=ADMIN)
    assert every.code == Exit.OK, every.err
    rows = {tuple(line.split()[:2]): line.split() for line in every.out.splitlines()[1:]}
    month, day = time.strftime("month:%Y-%m", time.gmtime()), time.strftime("day:%Y-%m-%d", time.gmtime())
    assert rows[("growth", month)][2] == "500.000000" and rows[("studio", day)][2] == "50.000000"
    own = json.loads(cli(capsys, live, "budgets", "--json", key=GROWTH).out)
    assert list(own["budgets"]) == ["growth"]
    other = cli(capsys, live, "budgets", "--team", "studio", key=GROWTH)
    assert other.code == Exit.AUTH


EDITOR = """import json, sys, os
path = sys.argv[1]
policy = json.load(open(path))
policy["daily_budget_usd"] = os.environ.get("EDIT_BUDGET", "0.01")
json.dump(policy, open(path, "w"))
if os.environ.get("EDIT_RACE"):  # someone else saves while this editor is open
    from broker.sync_client import SyncBrokerClient
    with SyncBrokerClient(os.environ["EDIT_URL"], os.environ["EDIT_KEY"]) as client:
        current = client.policy("studio")
        client.put_policy("studio", {**current["policy"], "max_attempts": 2}, version=current["version"])
"""


def test_policy_show_edit_history_and_a_402_that_says_what_is_left(
    live: Live, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = cli(capsys, live, "policy", "show", "studio", key=ADMIN)
    assert shown.code == Exit.OK and shown.out.startswith("team studio  version 0 (config)")
    assert 'daily_budget_usd: "50.00"' in shown.out
    script = live.tmp / "editor.py"
    script.write_text(EDITOR)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.delenv("VISUAL", raising=False)
    edited = cli(capsys, live, "policy", "edit", "studio", key=ADMIN)
    assert edited.code == Exit.OK and edited.out.strip() == "studio: saved version 1 (was 0)", edited.err
    try:
        refused = cli(capsys, live, "submit", str(SAMPLE), "--prompt", "x", "--provider", "runway")
        assert refused.code == Exit.BUDGET
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert "USD left in the day " + today in refused.err and "budget_exceeded" in refused.err
        # An edit racing another: If-Match carries the version read, so the later save is refused.
        monkeypatch.setenv("EDIT_RACE", "1")
        monkeypatch.setenv("EDIT_BUDGET", "0.02")
        monkeypatch.setenv("EDIT_URL", live.url)
        monkeypatch.setenv("EDIT_KEY", ADMIN)
        raced = cli(capsys, live, "policy", "edit", "studio", key=ADMIN)
        assert raced.code == Exit.USAGE and "(409" in raced.err
        history = cli(capsys, live, "policy", "history", "studio", key=ADMIN)
        assert history.code == Exit.OK
        assert 'daily_budget_usd: "50.00" -> "0.01"' in history.out and "version 2" in history.out
        mine = live.tmp / "mine.json"
        mine.write_text('{"max_attempts": 1}')
        team_key = cli(capsys, live, "policy", "edit", "studio", "--file", str(mine), key=STUDIO)
        assert team_key.code == Exit.AUTH and "(403" in team_key.err
    finally:
        restore = live.tmp / "restore.json"
        with live.client(ADMIN) as client:
            restore.write_text(json.dumps(client.policy_history("studio")[0]["policy"]))
        assert (
            cli(capsys, live, "policy", "edit", "studio", "--file", str(restore), key=ADMIN).code == Exit.OK
        )


def test_report_over_http_and_from_the_prefixed_store_equal_the_api(
    live: Live, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _finished(live, _submitted(capsys, live, "--provider", "runway"))
    today = time.strftime("%Y-%m-%d", time.gmtime())
    window = ["--from", today, "--to", today, "--by", "provider,team"]  # the same window for every reader
    with live.client(ADMIN) as client:
        api = client.cost_report(start=today, end=today, group_by="provider,team")
    assert api["totals"]["jobs"] >= 1
    over_http = cli(capsys, live, "report", *window, "--json", key=ADMIN)
    assert over_http.code == Exit.OK and json.loads(over_http.out) == api
    # Offline: the same store, with the sandbox's prefix as BROKER_REDIS_PREFIX says it.
    monkeypatch.setenv("BROKER_REDIS_PREFIX", live.prefix)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["report", "--store-url", REDIS_URL, *window, "--json"])
    out, err = capsys.readouterr()
    assert stopped.value.code == 0, err
    assert json.loads(out) == api
    assert (
        f"from {REDIS_URL} (prefix '{live.prefix}')" in err and f"read {api['totals']['jobs']} job(s)" in err
    )
    table = cli(capsys, live, "report", "--by", "provider", key=STUDIO)
    assert table.out.startswith("Costs from ") and "runway" in table.out
    assert table.out.splitlines()[0].endswith(", by provider; team studio only")  # a team key's scope


def test_a_second_sandbox_on_the_same_store_is_refused(live: Live) -> None:
    args = [sys.executable, "-m", "broker", "serve", "--sandbox", "--port", str(free_port())]
    second = subprocess.run(args, env=live.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    line = [x for x in second.stderr.splitlines() if x.startswith("broker serve:")]
    assert len(line) == 1 and "already runs on the store" in line[0] and live.url in line[0], second.stderr
    assert live.proc.alive


def test_sighup_on_the_sandbox_reloads_without_asking_for_a_restart(live: Live) -> None:
    before = live.proc.log_path.read_text()
    live.proc.popen.send_signal(signal.SIGHUP)
    for _ in range(100):
        grown = live.proc.log_path.read_text()[len(before) :]
        if "config_reloaded" in grown:
            break
        time.sleep(0.05)
    assert "config_reloaded" in grown and "config_reload_needs_restart" not in grown
    with live.client() as client:  # still routing to the emulators, doitong still priced
        prices = {f"{r['provider']}/{r['model']}": r for r in client.pricing()["routes"]}
    assert prices["doitong/runway-i2v"]["price"] is not None
