"""Measure `campaign report` on long logs: render time, peak memory, page size, browser load.

    .venv/bin/python bench/report.py                  # N = 100,000; 250,000 and 1,000,000 events
    .venv/bin/python bench/report.py --events 1000000 --runs 3 --browser

The campaign is `bench/generate.py`'s, the logs `bench/genlog.py`'s (the exact records `campaign
send` writes). Each render is a process started through bench/_launch.py (wall time, CPU and
peak RSS from its rusage), doing what `campaign report` does: `build_report`, then `write_report`.
`campaign log --json` is timed the same way on the same log, right after, so the ratio of the
two holds even on a busy machine. Every page is checked: its counts per status must equal
those genlog wrote the log to give, and those `campaign log --json` prints.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.genlog import genlog  # noqa: E402
from bench.run import measure_process  # noqa: E402

DRIVER = """
import json, resource, sys, time
from datetime import UTC, datetime
from pathlib import Path
from campaign.loading import Options
from campaign.report import build_report
from campaign.report_page import write_report
start = time.perf_counter()
data = build_report(Options(Path(sys.argv[1])), Path(sys.argv[2]), clock=lambda: datetime.now(UTC))
write_report(data, Path(sys.argv[3]))
own = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"inner_wall_s": time.perf_counter() - start,
                  "main_cpu_s": own.ru_utime + own.ru_stime, "main_rss_kib": own.ru_maxrss,
                  "reader_cpu_s": kids.ru_utime + kids.ru_stime, "reader_rss_kib": kids.ru_maxrss}))
"""
COUNT = re.compile(r'data-status="([a-z-]+)" data-count="(\d+)"')


def page_counts(html: str) -> dict[str, int]:
    glance = html[html.index('<section id="glance">') : html.index("</section>")]
    return {status: int(n) for status, n in COUNT.findall(glance) if int(n)}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(argv: list[str], out: Path) -> dict[str, Any]:
    stdout = out.with_suffix(".stdout")
    result = measure_process(argv, stdout=stdout, stderr=out.with_suffix(".stderr"), timeout=900)
    if result.exit_code != 0:
        raise SystemExit(
            f"{argv[:3]} failed ({result.exit_code}); see {out.with_suffix('.stderr')}"
        )
    return {
        "wall_s": round(result.wall_s, 2),
        "cpu_s": round(result.cpu_s, 2),
        "peak_rss_mib": round(result.peak_rss_kib / 1024, 1),
        "stdout": stdout,
    }


def open_in_browser(page: Path, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import Chromium, chromium_path

    executable = chromium_path()
    if executable is None:
        return {"browser": "chromium not installed (.ci/install-tools)"}
    with Chromium(work / "chromium", executable) as browser:
        start = time.perf_counter()
        opened = browser.open(page.as_uri())
        loaded = time.perf_counter() - start
        glance = opened.evaluate("document.getElementById('glance').innerText")
        blocks = opened.evaluate("document.querySelectorAll('article.recipient').length")
        problems, requests = opened.problems, opened.requests
    shown = {s: int(n) for n, s in re.findall(r"(\d+) ([a-z]+)\n", glance) if int(n)}
    return {
        "browser_load_s": round(loaded, 2),
        "browser_counts": shown,
        "browser_blocks": blocks,
        "browser_problems": problems,
        "browser_requests": len(requests),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="recipients")
    parser.add_argument("--events", default="250000,1000000", help="log lengths, comma-separated")
    parser.add_argument("--runs", type=int, default=1, help="renders per log")
    parser.add_argument("--browser", action="store_true", help="open each page in chromium")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    work = BENCH / "results" / "report-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    generated = generate(args.n, work / "campaign", seed=1)
    results: list[dict[str, Any]] = []
    try:
        for events in (int(e) for e in args.events.split(",")):
            folder = work / f"log-{events}"
            log = folder / "outbox" / "send-log.jsonl"
            log.parent.mkdir(parents=True)
            written = genlog(generated.yaml_path, log, events, seed=1)
            for run in range(args.runs):
                out = folder / f"report-{run}.html"
                row: dict[str, Any] = {
                    "n": args.n,
                    "events": written.events,
                    "log_mib": round(log.stat().st_size / 2**20, 1),
                    "load_before": load_average(),
                }
                render = measure(
                    [sys.executable, "-c", DRIVER, str(generated.yaml_path), str(log), str(out)],
                    out,
                )
                inner = json.loads(Path(render.pop("stdout")).read_text())
                row.update({f"report_{k}": v for k, v in render.items()})
                row["report_main_cpu_s"] = round(inner["main_cpu_s"], 2)
                row["report_reader_cpu_s"] = round(inner["reader_cpu_s"], 2)
                row["report_main_rss_mib"] = round(inner["main_rss_kib"] / 1024, 1)
                row["report_reader_rss_mib"] = round(inner["reader_rss_kib"] / 1024, 1)
                listing = folder / f"log-{run}.jsonl"
                campaign = str(Path(sys.executable).with_name("campaign"))
                log_run = measure(
                    [
                        "/bin/sh",
                        "-c",
                        f'exec "{campaign}" --file "$0" log --log "$1" --json > "$2"',
                        str(generated.yaml_path),
                        str(log),
                        str(listing),
                    ],
                    listing,
                )
                log_run.pop("stdout")
                row.update({f"log_json_{k}": v for k, v in log_run.items()})
                row["load_after"] = load_average()
                html = out.read_text(encoding="utf-8")
                statuses = Counter(
                    json.loads(line)["status"] for line in listing.read_text().splitlines()
                )
                row["page_mib"] = round(len(html.encode()) / 2**20, 2)
                row["counts"] = page_counts(html)
                row["counts_match_genlog"] = row["counts"] == written.expected
                row["counts_match_log_json"] = row["counts"] == dict(statuses)
                if args.browser and run == 0:
                    row.update(open_in_browser(out, folder))
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / "report.json").write_text(json.dumps(results, indent=1) + "\n")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ok = all(r["counts_match_genlog"] and r["counts_match_log_json"] for r in results)
    print(f"{'all pages exact' if ok else 'MISMATCH'}; results in bench/results/report.json")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.pop("CAMPAIGN_SKIP_BROWSER", None)
    sys.exit(main())
