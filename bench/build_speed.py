"""Time `MessageBuilder.build` alone, per message, on a generated campaign (µs a message).

Every letter is rendered first (not timed); then every recipient's message is built,
`--repeats` times over, and the fastest pass is reported with the median one. A builder
is made afresh for each pass, so what it builds once per run (the shared headers, the
campaign-wide attachments) counts once per pass, as in a real run.

    .venv/bin/python bench/build_speed.py --n 10000 --repeats 7
    .venv/bin/python bench/build_speed.py --n 1000 --attachment-kb 200
    .venv/bin/python bench/build_speed.py --yaml /tmp/n10000/recipients.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generate
from campaign.loading import Options, load_campaign
from campaign.message import MessageBuilder
from campaign.render import LetterRenderer

DATE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def build_speed(yaml_path: Path, repeats: int) -> dict[str, float | int]:
    """µs per message of every pass over the campaign's recipients, and bytes built."""
    source = load_campaign(Options(yaml_path))
    renderer = LetterRenderer(source.campaign, source.recipients)
    letters = [(r, renderer.render(r)) for r in source.recipients]
    passes: list[float] = []
    size = 0
    for _ in range(repeats):
        start = time.perf_counter()
        builder = MessageBuilder(source.campaign, DATE)
        size = sum(len(builder.build(r, rendered).data) for r, rendered in letters)
        passes.append((time.perf_counter() - start) / len(letters) * 1e6)
    return {
        "n": len(letters),
        "best_us": round(min(passes), 2),
        "median_us": round(statistics.median(passes), 2),
        "bytes_per_message": size // len(letters),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--attachment-kb", type=int, default=0, help="a PDF of this size on every letter"
    )
    p.add_argument("--work", type=Path, help="where to generate (default: a temporary folder)")
    p.add_argument("--yaml", type=Path, help="time this campaign file instead of generating one")
    args = p.parse_args(argv)
    if args.yaml:
        print(json.dumps(build_speed(args.yaml, args.repeats)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-build-") as scratch:
        folder = args.work or Path(scratch)
        data = generate(args.n, folder / f"n{args.n}", args.seed, attachment_kb=args.attachment_kb)
        print(json.dumps(build_speed(data.yaml_path, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
