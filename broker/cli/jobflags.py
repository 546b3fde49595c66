"""The flags `broker submit` and `broker quote` share, and the job body they make."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.cli.exits import CommandError

URL_PREFIXES = ("https://", "http://", "data:")
RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
QUALITIES = ("basic", "standard", "premium")
USD = re.compile(r"^\d+(\.\d{1,6})?$")


@dataclass(frozen=True, slots=True)
class JobInput:
    """The JSON fields of a job, and the image file to upload with them (if one was named)."""

    fields: dict[str, Any]
    image: Path | None


def _usd(text: str) -> str:
    if not USD.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount in USD: write it like 0.50 (up to 6 decimals)"
        )
    return text


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", nargs="?", metavar="IMAGE_FILE_OR_URL", help="a still to animate")
    parser.add_argument("--prompt", "-p", required=True, help="what should happen in the clip")
    parser.add_argument("--duration", type=int, metavar="S", help="seconds (default 5)")
    parser.add_argument("--ratio", choices=RATIOS, help="aspect ratio (default 16:9)")
    parser.add_argument("--resolution", choices=["720p", "1080p"])
    parser.add_argument("--audio", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--camera-fixed", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-cost", type=_usd, metavar="USD", help='the most the job may cost, e.g. "0.50"')
    parser.add_argument("--max-latency", type=int, metavar="S", help="the slowest route to accept")
    parser.add_argument("--min-quality", choices=QUALITIES)
    parser.add_argument(
        "--provider", action="append", metavar="NAME", help="only this provider (repeat for several)"
    )
    parser.add_argument("--exclude", action="append", metavar="NAME", help="never this provider (repeatable)")
    parser.add_argument("--model", action="append", metavar="NAME", help="only this model (repeatable)")


def _constraints(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "max_cost_usd": args.max_cost,
        "max_latency_s": args.max_latency,
        "min_quality": args.min_quality,
        "providers": args.provider,
        "exclude_providers": args.exclude,
        "models": args.model,
    }
    return {name: value for name, value in given.items() if value is not None}


def job_input(args: argparse.Namespace) -> JobInput:
    """The job body the flags describe; an image that is neither a URL nor a readable file is an error."""
    fields: dict[str, Any] = {
        "prompt": args.prompt,
        "duration_s": args.duration,
        "aspect_ratio": args.ratio,
        "resolution": args.resolution,
        "audio": args.audio,
        "camera_fixed": args.camera_fixed,
        "seed": args.seed,
    }
    fields = {name: value for name, value in fields.items() if value is not None}
    if constraints := _constraints(args):
        fields["constraints"] = constraints
    image: Path | None = None
    if args.image is not None:
        if args.image.startswith(URL_PREFIXES):
            fields["image_url"] = args.image
        else:
            image = Path(args.image)
            if not image.is_file():
                raise CommandError(f"{args.image}: no such image file (or pass an https:// URL)")
    return JobInput(fields, image)


def check_image_size(image: Path | None, limit: int | None) -> None:
    """Refuse, before any upload, an image file over the broker's limit, saying both sizes."""
    if image is None or limit is None:
        return
    size = image.stat().st_size
    if size > limit:
        raise CommandError(
            f"{image}: the image is {_mib(size)} ({size} bytes); the broker takes images up to "
            f"{_mib(limit)} ({limit} bytes). Shrink it, or pass an https:// URL"
        )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
