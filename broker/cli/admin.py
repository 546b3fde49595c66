"""`broker providers`, `broker budgets` and `broker policy show|edit|history`: the operator's views.

`policy edit` opens the team's own policy fields in `$VISUAL`/`$EDITOR` (or saves a `--file`) and
writes them back with `If-Match` set to the version read, so an edit made meanwhile by someone else is
refused (409) instead of silently overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from broker.cli.exits import CommandError, Exit
from broker.cli.tables import render_table
from broker.sync_client import SyncBrokerClient


def _print_json(body: Any) -> None:
    print(json.dumps(body, indent=2))


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def providers(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    """Each provider's health as the broker sees it."""
    rows = client.providers()
    if args.json:
        _print_json({"providers": rows})
        return Exit.OK
    table = []
    for p in rows:
        capacity = f"{p['in_flight']}/{_or_dash(p['max_concurrency'])}"
        rate = "-" if p["error_rate"] is None else f"{100 * p['error_rate']:.1f}%"
        latency = "-" if p["mean_latency_s"] is None else f"{p['mean_latency_s']:.2f}"
        circuit = p["circuit"] + (f" ({p['circuit_reason']})" if p.get("circuit_reason") else "")
        routable = "yes" if p["routable"] else "no (no key)"
        table.append([p["provider"], routable, circuit, capacity, str(p["requests"]), rate, latency])
    header = ["provider", "routable", "circuit", "in_flight", "requests", "errors", "latency_s"]
    print(render_table(header, table))
    return Exit.OK


def _policies(client: SyncBrokerClient, team: str | None) -> list[dict[str, Any]]:
    return [client.policy(team)] if team else client.policies()


def budgets(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    """Every budget window of the teams the key may see: limit, spent, reserved, remaining."""
    policies = _policies(client, args.team)
    if args.json:
        _print_json({"budgets": {p["team"]: p["budgets"] for p in policies}})
        return Exit.OK
    rows = [
        [
            p["team"],
            b["window"].split(":", 1)[1],
            b["limit_usd"],
            b["spent_usd"],
            b["reserved_usd"],
            b["remaining_usd"],
        ]
        for p in policies
        for b in p["budgets"]
    ]
    unlimited = [p["team"] for p in policies if not p["budgets"]]
    if rows:
        print(
            render_table(["team", "window", "limit_usd", "spent_usd", "reserved_usd", "remaining_usd"], rows)
        )
    if unlimited:
        print(f"no budget: {', '.join(unlimited)}")
    return Exit.OK


def _show_one(body: dict[str, Any]) -> str:
    updated = f", by {body['updated_by']} at {body['updated_at']}" if body.get("updated_by") else ""
    lines = [f"team {body['team']}  version {body['version']} ({body['source']}{updated})", "own fields:"]
    lines += [f"  {name}: {json.dumps(value)}" for name, value in sorted(body["policy"].items())] or [
        "  (none)"
    ]
    lines.append("effective:")
    lines += [f"  {name}: {json.dumps(value)}" for name, value in sorted(body["effective"].items())]
    for budget in body["budgets"]:
        lines.append(
            f"budget {budget['window']}: {budget['remaining_usd']} of {budget['limit_usd']} USD left"
            f" ({budget['spent_usd']} spent, {budget['reserved_usd']} reserved)"
        )
    return "\n".join(lines)


def policy_show(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    policies = _policies(client, args.team)
    if args.json:
        _print_json(policies[0] if args.team else {"policies": policies})
    else:
        print("\n\n".join(_show_one(body) for body in policies))
    return Exit.OK


def policy_history(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    versions = client.policy_history(args.team)
    if args.json:
        _print_json({"team": args.team, "versions": versions})
        return Exit.OK
    for version in versions:
        when = version["changed_at"] or "(config.yaml)"
        print(f"version {version['version']}  {when}  by {version['actor']}")
        for name, (old, new) in sorted(version["change"].items()):
            print(f"  {name}: {json.dumps(old)} -> {json.dumps(new)}")
    return Exit.OK


def _edited(fields: dict[str, Any], team: str, version: int) -> dict[str, Any] | None:
    """The fields after the user edited them in their editor; None when nothing changed."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    text = json.dumps(fields, indent=2, sort_keys=True) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"policy-{team}-v{version}.json"
        path.write_text(text)
        try:
            done = subprocess.run([*shlex.split(editor), str(path)], check=False)
        except OSError as exc:
            raise CommandError(f"cannot run the editor {editor!r} ($EDITOR): {exc.strerror or exc}") from None
        if done.returncode != 0:
            raise CommandError(f"the editor {editor!r} exited with {done.returncode}; nothing saved")
        edited = path.read_text()
    return None if edited == text else _parse(edited, "the edited policy")


def _parse(text: str, what: str) -> dict[str, Any]:
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{what} is not valid JSON ({exc}); nothing saved") from None
    if not isinstance(fields, dict):
        raise CommandError(f"{what} must be a JSON object of policy fields; nothing saved")
    return fields


def policy_edit(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    """Edit the team's own policy fields and save them as the next version (admin key)."""
    current = client.policy(args.team)
    version = int(current["version"])
    if args.file is not None:
        try:
            fields: dict[str, Any] | None = _parse(args.file.read_text(), str(args.file))
        except OSError as exc:
            raise CommandError(f"{args.file}: {exc.strerror or exc}") from None
    else:
        fields = _edited(current["policy"], args.team, version)
    if fields is None or fields == current["policy"]:
        print(f"{args.team}: no change; still version {version}")
        return Exit.OK
    saved = client.put_policy(args.team, fields, version=version)
    print(f"{args.team}: saved version {saved['version']} (was {version})")
    return Exit.OK
