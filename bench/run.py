"""One command for the whole benchmark: `python bench/run.py` (use bench/.venv's python).

For every N (default 1,000 and 10,000) and every sender in SENDERS, at least
three runs each, interleaved (run 1 of every sender, then run 2, ...). Every
run gets a fresh sink process (bench/sink.py, 127.0.0.1, a free port) and a
fresh directory; the sender is a separate process, timed from spawn to exit
(wall clock, so start-up and file parsing count), its peak RSS and CPU seconds
read from os.wait4's rusage. After each run the sink's counts are checked:
exactly one message per generated address, nothing missing, nothing else.

The same again in latency mode (the sink delays every reply by --latency
seconds, default 0.025) at smaller N (--latency-n, default 500), and the
sink's own ceiling (pre-built bytes over K pipelined connections).

Then provider mode (issue 13; --no-provider skips it, --provider-only runs it
alone): the sink enforces a relay's limits (a token bucket of 600 messages a
minute with a burst of 20, at most 2 connections per client, refusing beyond
them as relays do), and campaign with its default settings, campaign with a
well-chosen --rate, the smtplib loop and mailmerge each send N = 2,000 letters
through it: wall time against the ideal N / rate, refusals, and what arrived.

Then the attachment case (issue 15; --no-attachment skips it, --attachment-only
runs it alone): `campaign send` of N = 1,000 letters each carrying the same
200 KiB PDF, against the same campaign without it, interleaved, both verified at
the sink: msgs/s and what the attachment costs.

Then the figures issue 6 also asks for (--no-extras skips them): `campaign
check` on 100,000 recipients; `campaign log` and `campaign log --json` on a
log of 1,000,000 events written by bench/genlog.py; peak RSS of `campaign
send` at N = 1,000, 10,000 and 100,000; each verified, with its target.

Run directories are never deleted while the benchmark runs (see "run
directories" below): all of them go at the very end, after the results.

Writes bench/RESULTS.md (tables, targets, ratios, machine), raw figures as
JSON Lines in bench/results/raw.jsonl, and bench/throughput.png when
matplotlib can be imported.

    python bench/run.py                        # the full benchmark
    python bench/run.py --quick                # N=200, 1 run, latency N=50, small extras
    python bench/run.py --only-extras          # only check / log / send RSS
    python bench/run.py --provider-only        # only provider mode (about 8 minutes)
    python bench/run.py --attachment-only      # only the 200 KiB PDF case (about 30 s)
    python bench/run.py --senders smtplib-loop,aiosmtplib-ceiling --n 1000
    python bench/run.py measure --n 100000 -- {campaign} --file {yaml} check

A sender is one entry in SENDERS (name, argv builder, env builder, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import Generated, generate, mailmerge_config
from bench.sink import ProviderLimits, SinkCounts, SinkProcess, measure_ceiling

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOOPBACK = "loopback"
LATENCY = "latency"
PROVIDER = "provider"
ATTACHMENT = "attachment"


# --------------------------------------------------------------------------- senders


@dataclass
class RunContext:
    """What a sender's command is built from, for one run."""

    python: str  # the interpreter of the benchmark environment
    data: Generated  # the generated campaign (read only)
    port: int  # the sink of this run
    latency: float
    concurrency: int
    run_dir: Path  # fresh, empty; the sender's cwd
    prebuilt: Path | None  # pickled (sender, rcpts, bytes), for senders that need it
    rate: float | None = None  # provider mode: campaign's --rate, when the sender sets one


def _no_env(ctx: RunContext) -> dict[str, str]:
    return {}


def _always(python: str) -> str | None:
    return None


def _no_prepare(ctx: RunContext) -> None:
    return None


@dataclass(frozen=True)
class Sender:
    """One line of the comparison: how to run it, nothing else."""

    name: str
    describe: str
    argv: Callable[[RunContext], list[str]]
    env: Callable[[RunContext], dict[str, str]] = _no_env
    prepare: Callable[[RunContext], None] = _no_prepare  # before the clock starts
    unavailable: Callable[[str], str | None] = _always  # why it cannot run, or None
    connections: Callable[[RunContext], int] = lambda ctx: 1
    needs_prebuilt: bool = False


def campaign_command(python: str) -> list[str]:
    """`campaign` as installed next to `python` (console script), else `python -m campaign`."""
    script = Path(python).parent / "campaign"
    return [str(script)] if script.exists() else [python, "-m", "campaign"]


def _campaign_argv(ctx: RunContext) -> list[str]:
    return [
        *campaign_command(ctx.python),
        "--file",
        str(ctx.data.yaml_path),
        "--outbox",
        str(ctx.run_dir / "outbox"),
        "send",
        "--yes",
        "--concurrency",
        str(ctx.concurrency),
        "--log",
        str(ctx.run_dir / "send-log.jsonl"),
    ]


def _campaign_env(ctx: RunContext) -> dict[str, str]:
    return {
        "CAMPAIGN_SMTP_HOST": "127.0.0.1",
        "CAMPAIGN_SMTP_PORT": str(ctx.port),
        "CAMPAIGN_SMTP_SECURITY": "none",
    }


def _baseline(*args: str) -> list[str]:
    return [str(BENCH / "baselines.py"), *args]


def _smtplib_argv(ctx: RunContext) -> list[str]:
    data = str(ctx.data.outdir)
    return [ctx.python, *_baseline("smtplib-loop", "--data", data, "--port", str(ctx.port))]


def _ceiling_argv(ctx: RunContext) -> list[str]:
    assert ctx.prebuilt is not None
    return [
        ctx.python,
        *_baseline("aiosmtplib-ceiling", "--messages", str(ctx.prebuilt)),
        "--port",
        str(ctx.port),
        "--concurrency",
        str(ctx.concurrency),
    ]


def _mailmerge_prepare(ctx: RunContext) -> None:
    (ctx.run_dir / "mailmerge_server.conf").write_text(mailmerge_config(ctx.port), "utf-8")


def _mailmerge_argv(ctx: RunContext) -> list[str]:
    from bench.baselines import mailmerge_argv

    script = Path(ctx.python).parent / "mailmerge"
    return mailmerge_argv([str(script)], ctx.data.outdir, ctx.run_dir / "mailmerge_server.conf")


def _mailmerge_unavailable(python: str) -> str | None:
    if (Path(python).parent / "mailmerge").exists():
        return None
    return (
        f"mailmerge is not installed next to {python}; create the benchmark env: "
        "python3 -m venv bench/.venv && bench/.venv/bin/pip install -e . -r bench/requirements.txt"
    )


SENDERS: dict[str, Sender] = {
    s.name: s
    for s in [
        Sender(
            "campaign",
            "`campaign send --yes --concurrency K` (the product)",
            _campaign_argv,
            env=_campaign_env,
            connections=lambda ctx: ctx.concurrency,
        ),
        Sender(
            "smtplib-loop",
            "Jinja2 + EmailMessage per recipient, one persistent smtplib connection (CSV)",
            _smtplib_argv,
        ),
        Sender(
            "mailmerge",
            "mailmerge (PyPI) --no-dry-run --no-limit; a new connection per message",
            _mailmerge_argv,
            prepare=_mailmerge_prepare,
            unavailable=_mailmerge_unavailable,
        ),
        Sender(
            "aiosmtplib-ceiling",
            "transport ceiling: the same messages pre-built as bytes, aiosmtplib, K connections",
            _ceiling_argv,
            connections=lambda ctx: ctx.concurrency,
            needs_prebuilt=True,
        ),
    ]
}


def _campaign_default_argv(ctx: RunContext) -> list[str]:
    """campaign as a user runs it: no --concurrency (4 by default), no --rate."""
    return [
        *campaign_command(ctx.python),
        "--file",
        str(ctx.data.yaml_path),
        "--outbox",
        str(ctx.run_dir / "outbox"),
        "send",
        "--yes",
        "--log",
        str(ctx.run_dir / "send-log.jsonl"),
    ]


def _campaign_rate_argv(ctx: RunContext) -> list[str]:
    assert ctx.rate is not None
    rate = ["--rate", f"{ctx.rate:g}", "--concurrency", str(ctx.concurrency)]
    return [*_campaign_default_argv(ctx), *rate]


# Provider mode: what a campaigner would run against a relay that limits them.
PROVIDER_SENDERS: dict[str, Sender] = {
    s.name: s
    for s in [
        Sender(
            "campaign",
            "`campaign send --yes` with its default settings (4 connections, no --rate)",
            _campaign_default_argv,
            env=_campaign_env,
            connections=lambda ctx: 4,
        ),
        Sender(
            "campaign-rate",
            "`campaign send --yes --rate R --concurrency C`, chosen to fit the relay: R 95% of"
            " its rate, C its connection limit",
            _campaign_rate_argv,
            env=_campaign_env,
            connections=lambda ctx: ctx.concurrency,
        ),
        SENDERS["smtplib-loop"],
        SENDERS["mailmerge"],
    ]
}
PROVIDER_BEHAVIOUR = {
    "campaign": "paces itself by the relay's refusals (issue 13): after a rate or connection"
    " refusal it uses fewer connections and a lower rate, and tries the refused letters again"
    " in the same run, within --max-wait",
    "campaign-rate": "spaces message starts to the given rate; a refusal is paced as for campaign",
    "smtplib-loop": "a refused message is counted failed and the loop goes on to the next"
    " recipient: nothing is tried again",
    "mailmerge": "stops at the first refusal (`Error on message N ... Hint: --resume N`);"
    " its own `ratelimit` setting is 0 here, as generated",
}


# --------------------------------------------------------------------------- measuring


@dataclass
class ProcessResult:
    exit_code: int  # negative: killed by that signal
    wall_s: float  # spawn to exit
    cpu_user_s: float
    cpu_sys_s: float
    peak_rss_kib: int
    timed_out: bool

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s


def measure_process(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
    stdout: Path | None = None,
    stderr: Path | None = None,
) -> ProcessResult:
    """Run argv to exit: wall time from spawn to exit, CPU and peak RSS from its rusage.

    The command is started by bench/_launch.py (a tiny process) so that its
    peak RSS is not floored at this process's RSS; see that file.
    """
    full_env = {**os.environ, **(env or {})}
    fd, report_name = tempfile.mkstemp(prefix="bench-launch-", suffix=".json")
    os.close(fd)
    report = Path(report_name)
    launcher = [sys.executable, "-I", "-S", str(BENCH / "_launch.py"), str(report), "--"]
    try:
        with (
            open(stdout or os.devnull, "wb") as out,
            open(stderr or os.devnull, "wb") as err,
        ):
            start = time.perf_counter()
            proc = subprocess.Popen(
                [*launcher, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=cwd,
                start_new_session=True,  # so a timeout can kill the launcher and the command
            )
            timed_out = False
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(60)
            wall = time.perf_counter() - start
        try:
            figures = json.loads(report.read_text())
        except (OSError, ValueError):
            figures = {}
    finally:
        report.unlink(missing_ok=True)
    return ProcessResult(
        exit_code=figures.get("exit_code", proc.returncode if not timed_out else -9),
        wall_s=figures.get("wall_s", wall),
        cpu_user_s=figures.get("cpu_user_s", 0.0),
        cpu_sys_s=figures.get("cpu_sys_s", 0.0),
        peak_rss_kib=figures.get("peak_rss_kib", 0),
        timed_out=timed_out,
    )


def _tail(path: Path, limit: int = 600) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace").strip()


# --------------------------------------------------------------------------- config


@dataclass
class Config:
    ns: list[int] = field(default_factory=lambda: [1000, 10000])
    runs: int = 3
    concurrency: int = 8
    latency: float = 0.025  # 0 = no latency mode
    latency_ns: list[int] = field(default_factory=lambda: [500])
    senders: list[str] = field(default_factory=lambda: list(SENDERS))
    python: str = sys.executable  # runs the senders (the benchmark env)
    seed: int = 1
    work: Path = BENCH / "results" / "work"
    results_md: Path = BENCH / "RESULTS.md"
    raw: Path = BENCH / "results" / "raw.jsonl"
    plot: Path | None = BENCH / "throughput.png"
    ceiling: bool = True
    ceiling_messages: int = 20000
    ceiling_runs: int = 3
    timeout: float | None = None  # per run; default grows with N and latency
    keep_runs: bool = False
    command: str = ""
    quiet: bool = False
    # "Also measured" (issue 6): `campaign check`, `campaign log` on a long log, send RSS.
    extras: bool = True
    only_extras: bool = False
    check_n: int = 100_000
    check_runs: int = 3
    log_n: int = 100_000  # the campaign the generated log belongs to
    log_events: int = 1_000_000
    log_runs: int = 3
    rss_ns: list[int] = field(default_factory=lambda: [1000, 10_000, 100_000])
    rss_runs: int = 3  # the 100,000 figure sits near its limit: one run's noise would decide
    extra_slow_s: float = 60.0  # a measurement whose first run takes longer is run once
    # Before the first run: wait (up to fs_settle_max_s) until creating a 10 KB file in the
    # run directories takes under fs_settle_ms, in case a large deletion just happened.
    fs_settle_ms: float = 0.15
    fs_settle_max_s: float = 180.0
    extra_timeout: float = 1800.0
    # Provider mode (issue 13): the sink as a rate-limiting relay.
    provider: bool = True
    provider_only: bool = False
    provider_n: int = 2000
    provider_limits: ProviderLimits = field(
        default_factory=lambda: ProviderLimits(per_minute=600, burst=20, max_connections=2)
    )
    provider_rate: float = 570.0  # campaign's "well-chosen --rate": 95% of the relay's rate
    provider_senders: list[str] = field(default_factory=lambda: list(PROVIDER_SENDERS))
    provider_runs: int = 1
    # The attachment case (issue 15): the same campaign with and without a PDF on every letter.
    attachment: bool = True
    attachment_only: bool = False
    attachment_n: int = 1000
    attachment_kb: int = 200
    attachment_runs: int = 3
    # This invocation's run directories (fresh; removed only at the very end).
    runs_root: Path | None = None

    def run_timeout(self, n: int, latency: float) -> float:
        if self.timeout is not None:
            return self.timeout
        return 120.0 + n * (0.05 + 12 * latency)


@dataclass(frozen=True)
class Target:
    """`numerator >= factor(cfg) * denominator` (median msgs/s) in `mode`; factor None = ratio only.

    The thresholds here are the benchmark's defaults; edit them to the issue's figures.
    """

    label: str
    mode: str
    numerator: str
    denominator: str
    factor: Callable[[Config], float] | None
    n: int | None = None  # the N the target is stated at; other N are shown for reference


TARGET_N = 10_000  # issue 6: the loopback targets are measured at N = 10,000
TARGETS = [
    Target("campaign ≥ 3 × mailmerge", LOOPBACK, "campaign", "mailmerge", lambda c: 3.0, TARGET_N),
    Target(
        "campaign ≥ 2.5 × smtplib loop",
        LOOPBACK,
        "campaign",
        "smtplib-loop",
        lambda c: 2.5,
        TARGET_N,
    ),
    Target(
        "campaign ≥ 0.6 × transport ceiling",
        LOOPBACK,
        "campaign",
        "aiosmtplib-ceiling",
        lambda c: 0.6,
        TARGET_N,
    ),
    Target(
        "latency: campaign ≥ 0.8 × K × smtplib loop",
        LATENCY,
        "campaign",
        "smtplib-loop",
        lambda c: 0.8 * c.concurrency,
    ),
]


# --------------------------------------------------------------------------- run directories
#
# Every run writes into its own directory (sink report, stdout/stderr, and for
# `campaign send` an outbox with one archive .eml per message). None of them is
# deleted while the benchmark runs: on this machine's file system (ext4, no
# journal, mounted with `discard`) creating files right after a large
# directory was deleted costs about ten times more, so deleting the previous
# run's directory would slow the next run down, and only it. They all live
# under one fresh directory per invocation, on the same file system as always
# (bench/results/work/runs/<UTC time>-<pid>/), removed at the very end, after
# the results are written (`--keep-runs` keeps them; a failed run's directory
# is always kept).

KEEP_MARK = "KEPT.txt"  # a runs root holding this is never removed automatically


def runs_root(cfg: Config) -> Path:
    """This invocation's directory for run directories (created on first use)."""
    if cfg.runs_root is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        cfg.runs_root = cfg.work / "runs" / f"{stamp}-{os.getpid()}"
    cfg.runs_root.mkdir(parents=True, exist_ok=True)
    return cfg.runs_root


def fresh_run_dir(cfg: Config, name: str) -> Path:
    """A new, empty directory for one run; never one that held an earlier run."""
    root = runs_root(cfg)
    path = root / name
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{name}.{suffix}"
    path.mkdir(parents=True)
    return path


def probe_file_creation(cfg: Config, tag: str, files: int = 300, size: int = 10_000) -> float:
    """Milliseconds to create one `size`-byte file in a fresh run directory (kept to the end)."""
    directory = fresh_run_dir(cfg, f"fs-probe-{tag}")
    data = b"x" * size
    start = time.perf_counter()
    for i in range(files):
        fd = os.open(directory / f"{i:04d}.eml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return (time.perf_counter() - start) / files * 1000


def settle_file_system(cfg: Config) -> dict[str, Any]:
    """Probe file creation; while it is slow (a recent large deletion), wait a little."""
    probes = [probe_file_creation(cfg, "start-1")]
    waited = 0.0
    while probes[-1] > cfg.fs_settle_ms and waited < cfg.fs_settle_max_s:
        _log(cfg, f"file creation is slow ({probes[-1]:.2f} ms per file): waiting 15 s")
        time.sleep(15)
        waited += 15
        probes.append(probe_file_creation(cfg, f"start-{len(probes) + 1}"))
    return {"ms_per_file": [round(p, 3) for p in probes], "waited_s": waited}


def _pid_alive(name: str) -> bool:
    try:
        pid = int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_runs(cfg: Config, keep: Sequence[str | Path] = ()) -> list[str]:
    """At the very end: delete this invocation's run directories, except `keep` (failed runs).

    Also deletes what earlier, interrupted invocations left under work/runs (not
    the ones kept on purpose, which hold KEPT.txt, nor a live invocation's).
    Returns notes for the log.
    """
    notes: list[str] = []
    root = cfg.runs_root
    if root is not None and root.exists():
        kept = {Path(p).resolve() for p in keep if p}
        if cfg.keep_runs:
            (root / KEEP_MARK).write_text("kept by --keep-runs\n", "utf-8")
            notes.append(f"kept every run's directory in {_rel(root)}")
        else:
            for child in sorted(root.iterdir()):
                if child.resolve() in kept:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            if kept:
                (root / KEEP_MARK).write_text(
                    "kept: the directories of failed runs\n"
                    + "".join(f"{p}\n" for p in sorted(map(str, kept))),
                    "utf-8",
                )
                notes.append(f"kept {len(kept)} failed run(s) in {_rel(root)}")
            else:
                with contextlib.suppress(OSError):
                    root.rmdir()
    parent = cfg.work / "runs"
    if parent.is_dir():
        for other in sorted(parent.iterdir()):
            if other == root or not other.is_dir() or (other / KEEP_MARK).exists():
                continue
            if _pid_alive(other.name):
                continue
            shutil.rmtree(other, ignore_errors=True)
            notes.append(f"removed {_rel(other)}, left by an earlier, interrupted run")
    return notes


# --------------------------------------------------------------------------- running


@dataclass
class Results:
    config: Config
    records: list[dict[str, Any]]
    ceiling: list[dict[str, Any]]
    skipped: dict[str, str]  # sender -> why it could not run at all
    environment: dict[str, Any]
    started: str
    finished: str = ""
    extras: list[dict[str, Any]] = field(default_factory=list)  # kind "extra", one per run
    provider: list[dict[str, Any]] = field(default_factory=list)  # kind "provider", one per run
    genlog: dict[str, Any] | None = None  # what bench/genlog.py wrote for `campaign log`
    attachment: list[dict[str, Any]] = field(default_factory=list)  # kind "attachment"

    def summary(self) -> list[dict[str, Any]]:
        return summarise(self.records)

    @property
    def ok(self) -> bool:
        """No sender that ran produced a failed (unverified) run; every extra verified."""
        return (
            not any(r["status"] == "failed" for r in self.records)
            and all(c["verified"] for c in self.ceiling)
            and all(e["verified"] for e in self.extras)
            and all(p["verified"] for p in self.provider)
            and all(a["verified"] for a in self.attachment)
        )

    def failed_run_dirs(self) -> list[str]:
        return [
            r["run_dir"]
            for r in [*self.records, *self.extras, *self.provider, *self.attachment]
            if r.get("run_dir") and not r.get("verified", r.get("status") == "ok")
        ]


def _log(cfg: Config, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def _environment(python: str) -> dict[str, Any]:
    probe = (
        "import json, platform, sys\n"
        "from importlib import metadata\n"
        "v = {}\n"
        "for p in ('campaign', 'mailmerge', 'aiosmtplib', 'jinja2', 'PyYAML', 'matplotlib'):\n"
        "    try: v[p] = metadata.version(p)\n"
        "    except metadata.PackageNotFoundError: v[p] = None\n"
        "print(json.dumps({'python': platform.python_version(),\n"
        "  'implementation': platform.python_implementation(), 'versions': v}))\n"
    )
    try:
        out = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        env: dict[str, Any] = json.loads(out)
    except (subprocess.SubprocessError, OSError, ValueError):
        env = {"python": "unknown", "versions": {}}
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env.update(
        cpu_count=os.cpu_count(),
        cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        cpu_model=model,
        platform=platform.platform(),
        runner_python=platform.python_version(),
        sender_python_path=python,
        loadavg_start=os.getloadavg(),
    )
    return env


def _prebuild(cfg: Config, data: Generated) -> Path:
    out = data.outdir / "prebuilt.pkl"
    subprocess.run(
        [
            cfg.python,
            *_baseline("prebuild", "--data", str(data.outdir), "--out", str(out)),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=1800,
    )
    return out


def run_once(
    cfg: Config,
    sender: Sender,
    data: Generated,
    mode: str,
    latency: float,
    rep: int,
    prebuilt: Path | None,
) -> dict[str, Any]:
    """One verified, measured run of one sender against a fresh sink."""
    run_dir = fresh_run_dir(cfg, f"{mode}-n{data.n}-{sender.name}-{rep}")
    sink = SinkProcess(run_dir / "sink-report.json", latency=latency, max_seconds=7200)
    sink.start()
    error = ""
    counts: SinkCounts | None
    try:
        ctx = RunContext(
            python=cfg.python,
            data=data,
            port=sink.port,
            latency=latency,
            concurrency=cfg.concurrency,
            run_dir=run_dir,
            prebuilt=prebuilt,
        )
        sender.prepare(ctx)
        argv = sender.argv(ctx)
        result = measure_process(
            argv,
            env=sender.env(ctx),
            cwd=run_dir,
            timeout=cfg.run_timeout(data.n, latency),
            stdout=run_dir / "stdout.txt",
            stderr=run_dir / "stderr.txt",
        )
    finally:
        try:
            counts = sink.stop()
        except RuntimeError as exc:
            error = str(exc)
            counts = None
        finally:
            sink.__exit__()
    if counts is None:
        verify: dict[str, Any] = {"ok": False, "error": error}
        received = 0
        sink_info: dict[str, Any] = {}
    else:
        report = counts.verify(data.addresses())
        verify = report.to_dict()
        verify["summary"] = report.summary()
        received = counts.total_messages
        sink_info = {
            "total_messages": counts.total_messages,
            "total_bytes": counts.total_bytes,
            "connections": counts.connections,
            "max_concurrent": counts.max_concurrent,
            "protocol_errors": counts.protocol_errors,
        }
    if result.exit_code == 0 and verify["ok"] and not result.timed_out:
        status = "ok"
    elif result.exit_code != 0 and received == 0 and not result.timed_out:
        status = "unavailable"
    else:
        status = "failed"
    record = {
        "kind": "send",
        "mode": mode,
        "latency_s": latency,
        "n": data.n,
        "addresses": data.address_count,
        "sender": sender.name,
        "run": rep,
        "concurrency": cfg.concurrency,
        "connections": sender.connections(ctx),
        "status": status,
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "wall_s": round(result.wall_s, 4),
        "msgs_per_s": round(data.n / result.wall_s, 2) if result.wall_s > 0 else None,
        "cpu_user_s": round(result.cpu_user_s, 3),
        "cpu_sys_s": round(result.cpu_sys_s, 3),
        "cpu_s": round(result.cpu_s, 3),
        "peak_rss_mib": round(result.peak_rss_kib / 1024, 1),
        "verify": verify,
        "sink": sink_info,
        "argv": [str(a) for a in argv],
        "stderr_tail": "" if status == "ok" else _tail(run_dir / "stderr.txt"),
        "stdout_tail": "" if status == "ok" else _tail(run_dir / "stdout.txt", 300),
        "run_dir": "" if status == "ok" else str(run_dir),
    }
    return record  # the run directory stays until the very end (see remove_runs)


def ceiling_messages(prebuilt: Path, count: int) -> list[tuple[str, list[str], bytes]]:
    """`count` pre-built messages, the real bytes reused, envelope addresses kept unique."""
    import pickle

    with prebuilt.open("rb") as fh:
        base: list[tuple[str, list[str], bytes]] = pickle.load(fh)
    out = []
    for i in range(count):
        sender, rcpts, data = base[i % len(base)]
        rep = i // len(base)
        out.append((sender, [f"x{rep}.{r}" if rep else r for r in rcpts], data))
    return out


def campaign_statuses(cfg: Config, data: Generated, run_dir: Path) -> dict[str, int] | None:
    """What campaign's own log says per recipient (`campaign log --json`), or None."""
    log = run_dir / "send-log.jsonl"
    if not log.exists():
        return None
    argv = [
        *campaign_command(cfg.python),
        "--file",
        str(data.yaml_path),
        "--outbox",
        str(run_dir / "outbox"),
        "log",
        "--log",
        str(log),
        "--json",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode not in (0, 1):
        return None
    counts: Counter[str] = Counter()
    try:
        for line in done.stdout.splitlines():
            if line.strip():
                counts[str(json.loads(line)["status"])] += 1
    except (ValueError, KeyError, TypeError):
        return None
    return dict(sorted(counts.items()))


def run_provider_once(cfg: Config, sender: Sender, data: Generated, rep: int) -> dict[str, Any]:
    """One run of one sender against the sink in provider mode; what arrived, and when."""
    limits = cfg.provider_limits
    ideal = limits.ideal_seconds(data.n)
    run_dir = fresh_run_dir(cfg, f"provider-n{data.n}-{sender.name}-{rep}")
    timeout = cfg.timeout or ideal * 4 + 300
    sink = SinkProcess(run_dir / "sink-report.json", max_seconds=timeout + 600, provider=limits)
    sink.start()
    error = ""
    counts: SinkCounts | None
    try:
        ctx = RunContext(
            python=cfg.python,
            data=data,
            port=sink.port,
            latency=0.0,
            concurrency=(limits.max_connections or 4) if sender.name == "campaign-rate" else 4,
            run_dir=run_dir,
            prebuilt=None,
            rate=cfg.provider_rate if sender.name == "campaign-rate" else None,
        )
        sender.prepare(ctx)
        argv = sender.argv(ctx)
        result = measure_process(
            argv,
            env=sender.env(ctx),
            cwd=run_dir,
            timeout=timeout,
            stdout=run_dir / "stdout.txt",
            stderr=run_dir / "stderr.txt",
        )
    finally:
        try:
            counts = sink.stop()
        except RuntimeError as exc:
            error = str(exc)
            counts = None
        finally:
            sink.__exit__()
    record: dict[str, Any] = {
        "kind": PROVIDER,
        "sender": sender.name,
        "n": data.n,
        "addresses": data.address_count,
        "run": rep,
        "limits": {
            "per_minute": limits.per_minute,
            "burst": limits.burst,
            "max_connections": limits.max_connections,
            "greeting_reply": limits.greeting_reply,
            "mail_reply": limits.mail_reply,
        },
        "rate": ctx.rate,
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "wall_s": round(result.wall_s, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(result.wall_s / ideal, 4) if ideal else None,
        "argv": [str(a) for a in argv],
        "stderr_tail": _tail(run_dir / "stderr.txt"),
        "stdout_tail": _tail(run_dir / "stdout.txt", 300),
    }
    if counts is None:
        record.update(verified=False, error=error, run_dir=str(run_dir))
        return record
    report = counts.verify(data.addresses())
    once = report.expected - len(report.missing) - len(report.duplicates)
    record.update(
        mail_commands=counts.mail_commands,
        refused_mail=counts.refused_mail,
        refused_connections=counts.refused_connections,
        refused_share=round(counts.refused_mail / counts.mail_commands, 4)
        if counts.mail_commands
        else 0.0,
        connections=counts.connections,
        max_concurrent=counts.max_concurrent,
        delivered_once=once,
        missing=len(report.missing),
        duplicates=len(report.duplicates),
        unexpected=len(report.unexpected),
        statuses=campaign_statuses(cfg, data, run_dir)
        if sender.name.startswith("campaign")
        else None,
    )
    # Verified: nothing sent twice or to an address not in the campaign. What is missing is
    # the sender's result, reported, not a fault of the benchmark.
    record["verified"] = not (report.duplicates or report.unexpected or result.timed_out)
    record["run_dir"] = "" if record["verified"] else str(run_dir)
    return record


def run_provider(cfg: Config, results: Results) -> None:
    """Provider mode: every provider sender through a rate-limiting sink, N letters each."""
    data = generate(
        cfg.provider_n, cfg.work / "data" / f"n{cfg.provider_n}-seed{cfg.seed}", cfg.seed
    )
    senders = []
    for name in cfg.provider_senders:
        sender = PROVIDER_SENDERS[name]
        reason = sender.unavailable(cfg.python)
        if reason:
            results.skipped[f"{name} (provider)"] = reason
            _log(cfg, f"skip {name} (provider): {reason}")
        else:
            senders.append(sender)
    limits = cfg.provider_limits
    _log(
        cfg,
        f"provider mode: {limits.per_minute:g}/min, burst {limits.burst}, "
        f"{limits.max_connections} connections; N = {data.n:,}, ideal "
        f"{limits.ideal_seconds(data.n):.0f} s per sender",
    )
    for rep in range(1, cfg.provider_runs + 1):
        for sender in senders:
            rec = run_provider_once(cfg, sender, data, rep)
            results.provider.append(rec)
            _log(
                cfg,
                f"provider n={data.n:<6} {sender.name:14} run {rep}: wall {rec['wall_s']:8.1f} s "
                f"({rec.get('ratio') or 0:.2f}x ideal)  refused MAIL "
                f"{rec.get('refused_mail', 0)}/{rec.get('mail_commands', 0)}, connections "
                f"{rec.get('refused_connections', 0)}  delivered once "
                f"{rec.get('delivered_once', 0)}/{data.address_count}  exit {rec['exit_code']}"
                + ("" if rec["verified"] else "  NOT VERIFIED"),
            )


@dataclass(frozen=True)
class ProviderTarget:
    """One of issue 13's targets for campaign with its default settings in provider mode."""

    label: str
    check: Callable[[dict[str, Any], Config], tuple[bool | None, str]]


def _ratio_check(rec: dict[str, Any], cfg: Config) -> tuple[bool | None, str]:
    ratio = rec.get("ratio")
    if ratio is None or "missing" not in rec:
        return None, "not measured"
    value = f"{_ratio(ratio, 1.25)}× the ideal {rec['ideal_s']:.0f} s"
    if rec["missing"]:
        return False, f"{value}, but {rec['missing']:,} addresses not delivered"
    return ratio <= 1.25, value


def _status_check(status: str) -> Callable[[dict[str, Any], Config], tuple[bool | None, str]]:
    def check(rec: dict[str, Any], cfg: Config) -> tuple[bool | None, str]:
        statuses = rec.get("statuses")
        if statuses is None:
            return None, "campaign's log could not be read"
        count = int(statuses.get(status, 0))
        return count == 0, f"{count:,} {status}"

    return check


def _duplicates_check(rec: dict[str, Any], cfg: Config) -> tuple[bool | None, str]:
    if "duplicates" not in rec:
        return None, "not measured"
    once = f"{rec['delivered_once']:,} of {rec['addresses']:,} addresses got exactly one"
    return rec["duplicates"] == 0 and rec["unexpected"] == 0, f"{rec['duplicates']} twice; {once}"


def _refused_check(rec: dict[str, Any], cfg: Config) -> tuple[bool | None, str]:
    if not rec.get("mail_commands"):
        return None, "not measured"
    share = rec["refused_share"]
    return share <= 0.10, (
        f"{share:.1%} ({rec['refused_mail']:,} of {rec['mail_commands']:,} MAIL commands)"
    )


PROVIDER_TARGETS = [
    ProviderTarget("wall time ≤ 1.25 × the ideal N / rate", _ratio_check),
    ProviderTarget("0 failed", _status_check("failed")),
    ProviderTarget("0 unknown", _status_check("unknown")),
    ProviderTarget("0 duplicates", _duplicates_check),
    ProviderTarget("≤ 10% of attempts refused", _refused_check),
]


def evaluate_provider(results: Results) -> list[dict[str, Any]]:
    """Issue 13's targets for campaign (default settings), on its median-wall run."""
    runs = [r for r in results.provider if r["sender"] == "campaign"]
    if not runs:
        return []
    rec = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    out = []
    for target in PROVIDER_TARGETS:
        met, value = target.check(rec, results.config)
        verdict = "not measured" if met is None else "met" if met else "**missed**"
        out.append(
            {
                "kind": "provider-target",
                "target": target.label,
                "value": value,
                "met": met,
                "verdict": verdict,
                "run": rec["run"],
            }
        )
    return out


def _attachment_data(cfg: Config, kb: int) -> Generated:
    n = cfg.attachment_n
    folder = cfg.work / "data" / (f"n{n}-seed{cfg.seed}" + (f"-pdf{kb}" if kb else ""))
    return generate(n, folder, cfg.seed, attachment_kb=kb)


def run_attachment(cfg: Config, results: Results) -> None:
    """`campaign send` with a PDF on every letter and without, interleaved, each verified.

    Verified as every send is (one message per address at the sink), and the sink must
    have taken at least the attachment's base64 bytes for every letter.
    """
    from campaign.attachments import wire_size

    cases = [("plain", _attachment_data(cfg, 0)), ("pdf", _attachment_data(cfg, cfg.attachment_kb))]
    _log(
        cfg,
        f"attachment case: N = {cfg.attachment_n:,}, a {cfg.attachment_kb} KiB PDF on every"
        f" letter against none; {cfg.attachment_runs} runs each",
    )
    sender = SENDERS["campaign"]
    for rep in range(1, cfg.attachment_runs + 1):
        for case, data in cases:
            rec = run_once(cfg, sender, data, ATTACHMENT, 0.0, rep, None)
            size = data.attachment.stat().st_size if data.attachment else 0
            carried = rec["sink"].get("total_bytes", 0) >= data.n * wire_size(size)
            rec.update(
                kind=ATTACHMENT,
                case=case,
                attachment_bytes=size,
                bytes_per_letter=rec["sink"].get("total_bytes", 0) // data.n,
                verified=rec["status"] == "ok" and carried,
            )
            if rec["status"] == "ok" and not carried:
                rec["verify"]["summary"] = "the sink took fewer bytes than the attachments"
                rec["run_dir"] = str(Path(rec["argv"][rec["argv"].index("--log") + 1]).parent)
            results.attachment.append(rec)
            _log(
                cfg,
                f"{ATTACHMENT:10} n={data.n:<6} {case:6} run {rep}: {rec['status']:8} "
                f"{rec['msgs_per_s'] or 0:8.1f} msgs/s  wall {rec['wall_s']:6.2f} s  "
                f"cpu {rec['cpu_s']:6.2f} s  rss {rec['peak_rss_mib']:6.1f} MiB  "
                f"{rec['bytes_per_letter']:,} bytes a letter  "
                + ("verified" if rec["verified"] else "NOT VERIFIED"),
            )


def summarise_attachment(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case ("plain", "pdf"): median msgs/s, min, max, wall, CPU, RSS of verified runs."""
    out: dict[str, dict[str, Any]] = {}
    for case in ("plain", "pdf"):
        runs = [r for r in records if r["case"] == case]
        ok = [r for r in runs if r["verified"]]
        row: dict[str, Any] = {"runs": len(runs), "verified_runs": len(ok)}
        if ok:
            rates = [r["msgs_per_s"] for r in ok]
            row.update(
                msgs_per_s=statistics.median(rates),
                msgs_per_s_min=min(rates),
                msgs_per_s_max=max(rates),
                wall_s=statistics.median(r["wall_s"] for r in ok),
                cpu_s=statistics.median(r["cpu_s"] for r in ok),
                peak_rss_mib=statistics.median(r["peak_rss_mib"] for r in ok),
                bytes_per_letter=ok[0]["bytes_per_letter"],
                attachment_bytes=ok[0]["attachment_bytes"],
                n=ok[0]["n"],
            )
        out[case] = row
    return out


ATTACHMENT_HEADING = "## A PDF on every letter (attachments)"


def render_attachment(results: Results) -> list[str]:
    """The attachment case: the same campaign with and without a PDF, and what it costs."""
    if not results.attachment:
        return []
    cfg = results.config
    rows = summarise_attachment(results.attachment)
    plain, pdf = rows["plain"], rows["pdf"]
    lines = [
        ATTACHMENT_HEADING,
        "",
        f"Measured on {results.finished or results.started} (UTC) by `{cfg.command}`.",
        "",
        f"`campaign send --concurrency {cfg.concurrency}` of the generated campaign of N = "
        f"{cfg.attachment_n:,} letters, as it is and with `campaign.attachments` naming a "
        f"{cfg.attachment_kb} KiB PDF that every letter carries (read and base64-encoded once "
        "per run); the two interleaved, a fresh sink and folder per run, each verified at the "
        "sink (one message per address, and at least the attachment's base64 bytes a letter).",
        "",
        "| case | msgs/s (median) | min | max | wall s | CPU s | peak RSS MiB | bytes a letter "
        "| verified runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case, row in (("no attachment", plain), (f"{cfg.attachment_kb} KiB PDF", pdf)):
        if "msgs_per_s" not in row:
            lines.append(
                f"| {case} | **FAILED** | | | | | | | {row['verified_runs']}/{row['runs']} |"
            )
            continue
        lines.append(
            f"| {case} | {_fmt(row['msgs_per_s'])} | {_fmt(row['msgs_per_s_min'])} "
            f"| {_fmt(row['msgs_per_s_max'])} | {_fmt(row['wall_s'], 2)} | {_fmt(row['cpu_s'], 2)} "
            f"| {_fmt(row['peak_rss_mib'], 1)} | {row['bytes_per_letter']:,} "
            f"| {row['verified_runs']}/{row['runs']} |"
        )
    lines.append("")
    if "msgs_per_s" in plain and "msgs_per_s" in pdf:
        extra_ms = (1 / pdf["msgs_per_s"] - 1 / plain["msgs_per_s"]) * 1000
        larger = pdf["bytes_per_letter"] / plain["bytes_per_letter"]
        lines += [
            f"With the PDF every letter is {larger:.0f} times larger"
            f" ({pdf['bytes_per_letter']:,} bytes against "
            f"{plain['bytes_per_letter']:,}); campaign sends **{_fmt(pdf['msgs_per_s'])} "
            f"letters/s**, {pdf['msgs_per_s'] / plain['msgs_per_s']:.2f}× the rate without it "
            f"({extra_ms:.2f} ms more a letter, end to end: building, the archive's copy, "
            "the SMTP transfer).",
            "",
        ]
    return lines


def run_benchmark(cfg: Config) -> Results:
    unknown = [s for s in cfg.senders if s not in SENDERS]
    if unknown:
        raise SystemExit(f"unknown sender(s) {unknown}; known: {list(SENDERS)}")
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results = Results(cfg, [], [], {}, _environment(cfg.python), started)
    cfg.work.mkdir(parents=True, exist_ok=True)
    senders = []
    for name in cfg.senders:
        reason = SENDERS[name].unavailable(cfg.python)
        if reason:
            results.skipped[name] = reason
            _log(cfg, f"skip {name}: {reason}")
        else:
            senders.append(SENDERS[name])

    results.environment["fs_probe_start"] = settle_file_system(cfg)
    senders_run = not (cfg.only_extras or cfg.provider_only or cfg.attachment_only)
    modes: list[tuple[str, float, list[int]]] = [(LOOPBACK, 0.0, cfg.ns)] if senders_run else []
    if cfg.latency > 0 and cfg.latency_ns and senders_run:
        modes.append((LATENCY, cfg.latency, cfg.latency_ns))
    datasets: dict[int, tuple[Generated, Path | None]] = {}
    need_prebuilt = cfg.ceiling or any(s.needs_prebuilt for s in senders)
    for n in sorted({n for _, _, ns in modes for n in ns}):
        data = generate(n, cfg.work / "data" / f"n{n}-seed{cfg.seed}", cfg.seed)
        datasets[n] = (data, _prebuild(cfg, data) if need_prebuilt else None)

    given_up: set[str] = set()  # "unavailable" once: not tried again anywhere
    for mode, latency, ns in modes:
        for n in ns:
            data, prebuilt = datasets[n]
            failed_here: set[str] = set()
            for rep in range(1, cfg.runs + 1):
                for sender in senders:
                    if sender.name in given_up or sender.name in failed_here:
                        continue
                    rec = run_once(cfg, sender, data, mode, latency, rep, prebuilt)
                    results.records.append(rec)
                    _log(
                        cfg,
                        f"{mode:8} n={n:<7} {sender.name:20} run {rep}: {rec['status']:11} "
                        f"{rec['msgs_per_s'] or 0:9.1f} msgs/s  wall {rec['wall_s']:7.2f} s  "
                        f"cpu {rec['cpu_s']:6.2f} s  rss {rec['peak_rss_mib']:6.1f} MiB  "
                        f"{rec['verify'].get('summary', '')}",
                    )
                    if rec["status"] == "unavailable":
                        given_up.add(sender.name)
                        _log(cfg, f"  {sender.name} not available: {rec['stderr_tail'][-300:]}")
                    elif rec["status"] == "failed":
                        failed_here.add(sender.name)
                        _log(cfg, f"  {sender.name} FAILED; kept {rec['run_dir']}")

    if cfg.ceiling and datasets:
        biggest = max(cfg.ns) if cfg.ns else max(datasets)
        prebuilt = datasets[biggest][1]
        assert prebuilt is not None
        messages = ceiling_messages(prebuilt, max(cfg.ceiling_messages, 1))
        for rep in range(1, cfg.ceiling_runs + 1):
            r = measure_ceiling(
                messages, cfg.concurrency, fresh_run_dir(cfg, f"sink-ceiling-{rep}")
            )
            r.update(kind="sink-ceiling", run=rep, source=f"pre-built messages of N={biggest}")
            results.ceiling.append(r)
            _log(
                cfg,
                f"sink ceiling run {rep}: {r['msgs_per_s']:.0f} msgs/s, {r['mb_per_s']:.0f} MB/s "
                f"over {r['connections']} connections, verified={r['verified']}",
            )
    if (cfg.provider or cfg.provider_only) and not (cfg.only_extras or cfg.attachment_only):
        run_provider(cfg, results)
    if (cfg.attachment or cfg.attachment_only) and not (cfg.only_extras or cfg.provider_only):
        run_attachment(cfg, results)
    if cfg.extras and not (cfg.provider_only or cfg.attachment_only):
        run_extras(cfg, results, {n: d for n, (d, _) in datasets.items()})
    results.environment["fs_probe_end"] = round(probe_file_creation(cfg, "end"), 3)
    results.finished = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results.environment["loadavg_end"] = os.getloadavg()
    return results


# --------------------------------------------------------------------------- also measured

CHECK = "check"
LOG_TABLE = "log-table"
LOG_JSON = "log-json"
SEND_RSS = "send-rss"
STATUS_WORDS = ("sent", "partial", "deferred", "failed", "unknown", "pending", "sending")


@dataclass(frozen=True)
class Limit:
    metric: str  # a key of the summary row: "wall_s" or "peak_rss_mib"
    below: float
    unit: str
    label: str


@dataclass(frozen=True)
class ExtraTarget:
    """A target outside the throughput comparison (issues 6, 10): each limit must be undercut."""

    name: str  # CHECK, LOG_TABLE, LOG_JSON, SEND_RSS
    scale: int  # recipients (check, send) or log events (log), as the target states it
    limits: tuple[Limit, ...]
    label: str


_WALL = "wall"
EXTRA_TARGETS = [
    ExtraTarget(
        CHECK,
        100_000,
        (Limit("wall_s", 20.0, "s", _WALL),),
        "`campaign check` on 100,000 recipients in under 20 s",
    ),
    ExtraTarget(
        LOG_TABLE,
        1_000_000,
        (Limit("wall_s", 10.0, "s", _WALL), Limit("peak_rss_mib", 300.0, "MiB", "RSS")),
        "`campaign log` on 1,000,000 events in under 10 s and 300 MiB",
    ),
    ExtraTarget(
        LOG_JSON,
        1_000_000,
        (Limit("wall_s", 10.0, "s", _WALL), Limit("peak_rss_mib", 300.0, "MiB", "RSS")),
        "`campaign log --json` on 1,000,000 events in under 10 s and 300 MiB",
    ),
    ExtraTarget(
        SEND_RSS,
        100_000,
        # The limit issue 10 sets (issue 6 had asked for 150 MiB).
        (Limit("peak_rss_mib", 200.0, "MiB", "RSS"),),
        "`campaign send` peak RSS under 200 MiB at N = 100,000",
    ),
]

EXTRA_TITLES = {
    CHECK: "`campaign check`",
    LOG_TABLE: "`campaign log` (table)",
    LOG_JSON: "`campaign log --json`",
    SEND_RSS: "`campaign send --concurrency K` at the sink",
}


def _dataset(cfg: Config, cache: dict[int, Generated], n: int) -> Generated:
    if n not in cache:
        cache[n] = generate(n, cfg.work / "data" / f"n{n}-seed{cfg.seed}", cfg.seed)
    return cache[n]


def _extra_record(
    name: str,
    n: int,
    events: int | None,
    rep: int,
    argv: Sequence[str],
    r: ProcessResult,
    verified: bool,
    detail: str,
    run_dir: Path,
) -> dict[str, Any]:
    return {
        "kind": "extra",
        "name": name,
        "n": n,
        "events": events,
        "run": rep,
        "argv": [str(a) for a in argv],
        "exit_code": r.exit_code,
        "timed_out": r.timed_out,
        "wall_s": round(r.wall_s, 4),
        "cpu_s": round(r.cpu_s, 3),
        "cpu_user_s": round(r.cpu_user_s, 3),
        "cpu_sys_s": round(r.cpu_sys_s, 3),
        "peak_rss_mib": round(r.peak_rss_kib / 1024, 1),
        "verified": verified,
        "detail": detail,
        "stderr_tail": "" if verified else _tail(run_dir / "stderr.txt"),
        "run_dir": "" if verified else str(run_dir),
    }


def measure_extra(
    cfg: Config,
    name: str,
    argv: Sequence[str],
    n: int,
    events: int | None,
    runs: int,
    verify: Callable[[Path, ProcessResult], tuple[bool, str]],
) -> list[dict[str, Any]]:
    """`runs` measured runs of one command (one only when the first takes over extra_slow_s)."""
    out: list[dict[str, Any]] = []
    for rep in range(1, max(runs, 1) + 1):
        run_dir = fresh_run_dir(cfg, f"extra-{name}-n{n}-{rep}")
        r = measure_process(
            argv,
            cwd=run_dir,
            timeout=cfg.extra_timeout,
            stdout=run_dir / "stdout.txt",
            stderr=run_dir / "stderr.txt",
        )
        if r.exit_code != 0 or r.timed_out:
            ok, detail = False, f"exit {r.exit_code}" + (" (timed out)" if r.timed_out else "")
        else:
            ok, detail = verify(run_dir / "stdout.txt", r)
        rec = _extra_record(name, n, events, rep, argv, r, ok, detail, run_dir)
        out.append(rec)
        _log(
            cfg,
            f"extra    {name:10} n={n:<7} run {rep}: {'ok' if ok else 'FAILED':6} "
            f"wall {r.wall_s:7.2f} s  cpu {r.cpu_s:6.2f} s  rss {r.peak_rss_kib / 1024:7.1f} MiB"
            f"  {detail}",
        )
        if not ok:
            break
        if rep < runs and r.wall_s > cfg.extra_slow_s:
            rec["note"] = f"1 run: it takes over {cfg.extra_slow_s:g} s"
            break
    return out


def _verify_check(n: int) -> Callable[[Path, ProcessResult], tuple[bool, str]]:
    def verify(stdout: Path, r: ProcessResult) -> tuple[bool, str]:
        text = stdout.read_text("utf-8", "replace")
        ok = f"All {n} letters render" in text
        return ok, f"all {n:,} letters render" if ok else "no 'All N letters render' line"

    return verify


def _verify_log_json(
    n: int, expected: dict[str, int]
) -> Callable[[Path, ProcessResult], tuple[bool, str]]:
    def verify(stdout: Path, r: ProcessResult) -> tuple[bool, str]:
        counts: Counter[str] = Counter()
        rows = 0
        with stdout.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rows += 1
                    counts[json.loads(line)["status"]] += 1
        got = dict(sorted(counts.items()))
        if rows != n or got != expected:
            return False, f"{rows:,} rows, statuses {got}; expected {n:,} rows, {expected}"
        return True, f"{rows:,} rows, statuses as written"

    return verify


def _verify_log_table(
    n: int, expected: dict[str, int]
) -> Callable[[Path, ProcessResult], tuple[bool, str]]:
    first, last = f"r{1:06d}", f"r{n:06d}"  # bench/generate.py's ids

    def verify(stdout: Path, r: ProcessResult) -> tuple[bool, str]:
        text = stdout.read_text("utf-8", "replace")
        head = text[:2000].splitlines()
        counts = {}
        for line in head[:6]:
            found = dict(
                (w, int(c)) for c, w in re.findall(r"(\d+) (" + "|".join(STATUS_WORDS) + ")", line)
            )
            if len(found) >= 5:
                counts = {k: v for k, v in sorted(found.items()) if v}
                break
        if counts != expected:
            return False, f"status counts {counts or 'not found'}; expected {expected}"
        if first not in text or last not in text:
            return False, f"the table does not list {first} .. {last}"
        return True, f"counts as written, rows {first}..{last}"

    return verify


def run_genlog(cfg: Config, data: Generated, events: int) -> dict[str, Any]:
    """Write the long log with bench/genlog.py (not timed); its summary, with where it is."""
    out = fresh_run_dir(cfg, f"genlog-n{data.n}-e{events}") / "send-log.jsonl"
    start = time.perf_counter()
    done = subprocess.run(
        [
            cfg.python,
            str(BENCH / "genlog.py"),
            str(data.yaml_path),
            str(out),
            "--events",
            str(events),
            "--seed",
            str(cfg.seed),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=cfg.extra_timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench/genlog.py failed: {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary.update(
        kind="genlog",
        n=data.n,
        requested_events=events,
        seconds=round(time.perf_counter() - start, 2),
        bytes=out.stat().st_size,
    )
    return summary


def run_extras(cfg: Config, results: Results, cache: dict[int, Generated]) -> None:
    """`campaign check`, `campaign log` (table and --json) on a long log, send peak RSS."""
    campaign = campaign_command(cfg.python)
    # check first: it writes no files, so it is not affected by what the sends leave behind
    if cfg.check_n:
        data = _dataset(cfg, cache, cfg.check_n)
        argv = [*campaign, "--file", str(data.yaml_path), "check"]
        results.extras += measure_extra(
            cfg, CHECK, argv, data.n, None, cfg.check_runs, _verify_check(data.n)
        )
    if cfg.log_n and cfg.log_events:
        data = _dataset(cfg, cache, cfg.log_n)
        summary = run_genlog(cfg, data, cfg.log_events)
        results.genlog = summary
        _log(
            cfg,
            f"genlog   {summary['events']:,} events for {summary['recipients']:,} recipients "
            f"({summary['runs']} runs) in {summary['seconds']:.1f} s; "
            f"expected {summary['expected']}",
        )
        expected = dict(sorted(summary["expected"].items()))
        log = summary["path"]
        base = [*campaign, "--file", str(data.yaml_path), "log", "--log", log]
        for name, argv, verify in (
            (LOG_JSON, [*base, "--json"], _verify_log_json(data.n, expected)),
            (LOG_TABLE, base, _verify_log_table(data.n, expected)),
        ):
            results.extras += measure_extra(
                cfg, name, argv, data.n, summary["events"], cfg.log_runs, verify
            )
    sender = SENDERS["campaign"]
    for n in sorted(set(cfg.rss_ns)):
        data = _dataset(cfg, cache, n)
        for rep in range(1, cfg.rss_runs + 1):
            rec = run_once(cfg, sender, data, "extra", 0.0, rep, None)
            rec.update(
                kind="extra",
                name=SEND_RSS,
                events=None,
                verified=rec["status"] == "ok",
                detail=rec["verify"].get("summary", "") or rec["verify"].get("error", ""),
            )
            results.extras.append(rec)
            _log(
                cfg,
                f"extra    {SEND_RSS:10} n={n:<7} run {rep}: {rec['status']:6} "
                f"wall {rec['wall_s']:7.2f} s  cpu {rec['cpu_s']:6.2f} s  "
                f"rss {rec['peak_rss_mib']:7.1f} MiB  {rec['detail']}",
            )


def summarise_extras(extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int, int | None], list[dict[str, Any]]] = {}
    for e in extras:
        groups.setdefault((e["name"], e["n"], e.get("events")), []).append(e)
    out = []
    for (name, n, events), runs in groups.items():
        ok = [r for r in runs if r["verified"]]
        row: dict[str, Any] = {
            "name": name,
            "n": n,
            "events": events,
            "runs": len(runs),
            "verified_runs": len(ok),
            "verified": bool(ok) and len(ok) == len(runs),
            "note": next((r["note"] for r in runs if r.get("note")), ""),
            "detail": runs[-1].get("detail", ""),
        }
        if ok:
            walls = [r["wall_s"] for r in ok]
            row.update(
                wall_s=statistics.median(walls),
                wall_s_min=min(walls),
                wall_s_max=max(walls),
                cpu_s=statistics.median(r["cpu_s"] for r in ok),
                peak_rss_mib=statistics.median(r["peak_rss_mib"] for r in ok),
                peak_rss_mib_max=max(r["peak_rss_mib"] for r in ok),
            )
            if name == SEND_RSS:
                row["msgs_per_s"] = statistics.median(r["msgs_per_s"] for r in ok)
        out.append(row)
    order = {CHECK: 0, LOG_TABLE: 1, LOG_JSON: 2, SEND_RSS: 3}
    return sorted(out, key=lambda r: (order.get(r["name"], 9), r["n"]))


def _scale(row: dict[str, Any]) -> int:
    return int(row["events"]) if row["name"] in (LOG_TABLE, LOG_JSON) else int(row["n"])


def evaluate_extras(results: Results) -> list[dict[str, Any]]:
    """Each extra target against its row at the target's scale (or the largest one measured)."""
    rows = summarise_extras(results.extras)
    out = []
    for t in EXTRA_TARGETS:
        candidates = [r for r in rows if r["name"] == t.name]
        if not candidates:
            continue
        row = next((r for r in candidates if _scale(r) == t.scale), max(candidates, key=_scale))
        entry: dict[str, Any] = {
            "kind": "extra-target",
            "target": t.label,
            "name": t.name,
            "scale": t.scale,
            "measured_at": _scale(row),
            "limits": [],
        }
        if not row["verified"]:
            entry.update(verdict="not verified", met=None)
        else:
            for lim in t.limits:
                value = float(row[lim.metric])
                entry["limits"].append(
                    {
                        "metric": lim.metric,
                        "label": lim.label,
                        "below": lim.below,
                        "unit": lim.unit,
                        "value": value,
                        "ratio": value / lim.below,
                        "met": value < lim.below,
                    }
                )
            met = all(lim["met"] for lim in entry["limits"])
            at_scale = _scale(row) == t.scale
            entry["met"] = met if at_scale else None
            entry["verdict"] = _extra_verdict(entry["limits"], met, at_scale, _scale(row))
        out.append(entry)
    return out


def _extra_verdict(limits: list[dict[str, Any]], met: bool, at_scale: bool, scale: int) -> str:
    parts = []
    for lim in limits:
        value, below, unit = lim["value"], lim["below"], lim["unit"]
        if lim["met"]:
            parts.append(f"{lim['label']} {lim['ratio']:.2f}× the limit")
        else:
            parts.append(
                f"{lim['label']} {_fmt(value, 1)} {unit} = {lim['ratio']:.2f}× the limit "
                f"(+{_fmt(value - below, 1)} {unit})"
            )
    if not at_scale:
        return f"— (measured at {scale:,}, not the target's scale): " + "; ".join(parts)
    return ("met: " if met else "**missed**: ") + "; ".join(parts)


# --------------------------------------------------------------------------- reporting


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, float, int, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == "send":
            groups.setdefault((r["mode"], r["latency_s"], r["n"], r["sender"]), []).append(r)
    out = []
    for (mode, latency, n, sender), runs in groups.items():
        ok = [r for r in runs if r["status"] == "ok"]
        statuses = {r["status"] for r in runs}
        status = "ok" if statuses == {"ok"} else "failed" if "failed" in statuses else "unavailable"
        row: dict[str, Any] = {
            "mode": mode,
            "latency_s": latency,
            "n": n,
            "sender": sender,
            "status": status,
            "runs": len(runs),
            "verified_runs": len(ok),
            "connections": runs[0]["connections"],
            "detail": "" if status == "ok" else (runs[-1]["stderr_tail"] or "")[-200:],
        }
        if ok and status == "ok":
            rates = [r["msgs_per_s"] for r in ok]
            row.update(
                msgs_per_s=statistics.median(rates),
                msgs_per_s_min=min(rates),
                msgs_per_s_max=max(rates),
                wall_s=statistics.median(r["wall_s"] for r in ok),
                cpu_s=statistics.median(r["cpu_s"] for r in ok),
                peak_rss_mib=statistics.median(r["peak_rss_mib"] for r in ok),
                peak_rss_mib_max=max(r["peak_rss_mib"] for r in ok),
            )
        out.append(row)
    return out


def _median_rate(summary: list[dict[str, Any]], mode: str, n: int, sender: str) -> float | None:
    for row in summary:
        if row["mode"] == mode and row["n"] == n and row["sender"] == sender:
            return row.get("msgs_per_s") if row["status"] == "ok" else None
    return None


def evaluate_targets(results: Results) -> list[dict[str, Any]]:
    cfg = results.config
    summary = results.summary()
    out = []
    for t in TARGETS:
        ns = cfg.ns if t.mode == LOOPBACK else cfg.latency_ns if cfg.latency > 0 else []
        for n in ns:
            num = _median_rate(summary, t.mode, n, t.numerator)
            den = _median_rate(summary, t.mode, n, t.denominator)
            factor = t.factor(cfg) if t.factor else None
            ratio = num / den if num is not None and den else None
            if ratio is None:
                verdict = "not measured"
            elif factor is None:
                verdict = "reported"
            else:
                verdict = "met" if ratio >= factor else "missed"
                if t.n is not None and n != t.n:
                    verdict = f"({verdict}; the target is at N = {t.n:,}, this is for reference)"
            out.append(
                {
                    "target": t.label,
                    "mode": t.mode,
                    "n": n,
                    "numerator": t.numerator,
                    "denominator": t.denominator,
                    "ratio": ratio,
                    "required": factor,
                    "verdict": verdict,
                }
            )
    return out


def _ratio(ratio: float | None, required: float | None) -> str:
    """Two decimals, or three when two would round a miss up to the threshold (2.996 ≠ 3)."""
    if ratio is None:
        return "—"
    digits = 2
    text = f"{ratio:.{digits}f}"
    while required is not None and ratio < required <= float(text) and digits < 6:
        digits += 1
        text = f"{ratio:.{digits}f}"
    return text


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def render_markdown(results: Results) -> str:
    cfg = results.config
    env = results.environment
    summary = results.summary()
    versions = env.get("versions", {})
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run.py` on {results.finished or results.started} (UTC). "
        "Do not edit by hand: run the benchmark again.",
        "",
        f"- Command: `{cfg.command or 'python bench/run.py'}`",
        f"- Machine: {env.get('cpu_count')} CPUs (affinity {env.get('cpu_affinity')}), "
        f"{env.get('cpu_model') or 'unknown model'}; {env.get('platform')}",
        f"- Python {env.get('python')} ({env.get('implementation', '')}) for the senders, "
        f"{env.get('runner_python')} for the runner and sink",
        f"- Load average (1, 5, 15 min) at start {_load(env.get('loadavg_start'))}, "
        f"at end {_load(env.get('loadavg_end'))}: other work on the machine shows here "
        "and widens min–max",
        "- Versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items()),
        f"- Runs per figure: {cfg.runs} (median, with min and max); concurrency K = "
        f"{cfg.concurrency}; latency mode: {cfg.latency * 1000:g} ms per reply"
        + ("" if cfg.latency > 0 else " (off)"),
        "- msgs/s = letters (recipients) / wall seconds from process spawn to exit; "
        "a letter to a recipient with several addresses is one message with several "
        "envelope recipients. Peak RSS and CPU (user + sys) from `wait4`, taken by a "
        "tiny launcher (bench/_launch.py), so RSS has a floor of about 10 MiB.",
        "- Every run verified at the sink: exactly one message per generated address, "
        "none missing, nothing unexpected; a fresh sink process per run.",
        "- Every run writes into a fresh directory, and none is deleted until all results "
        "are written: on this file system (ext4, no journal, `discard`) creating files "
        "right after a large directory was deleted costs about ten times more, which "
        "would slow down only the run after each deletion." + _fs_probe_text(env),
        "",
    ]
    if results.skipped:
        lines += ["Not run:", ""]
        lines += [f"- {name}: {why}" for name, why in results.skipped.items()]
        lines.append("")

    senders_run = not (cfg.only_extras or cfg.provider_only or cfg.attachment_only)
    modes = [(LOOPBACK, "Loopback, no added latency", cfg.ns)] if senders_run else []
    if cfg.latency > 0 and senders_run:
        modes.append(
            (
                LATENCY,
                f"Latency mode: every reply delayed {cfg.latency * 1000:g} ms",
                cfg.latency_ns,
            )
        )
    for mode, title, ns in modes:
        lines += [
            f"## {title}",
            "",
            "| N | sender | msgs/s (median) | min | max | wall s | CPU s | peak RSS MiB "
            "| connections | verified runs |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for n in ns:
            for name in cfg.senders:
                row = next(
                    (
                        r
                        for r in summary
                        if r["mode"] == mode and r["n"] == n and r["sender"] == name
                    ),
                    None,
                )
                if row is None:
                    gave_up = name in results.skipped or any(
                        r["sender"] == name and r["status"] == "unavailable"
                        for r in results.records
                    )
                    why = "not available" if gave_up else "not run"
                    lines.append(f"| {n:,} | {name} | {why} | | | | | | | |")
                elif row["status"] != "ok":
                    label = "not available" if row["status"] == "unavailable" else "**FAILED**"
                    detail = row["detail"].replace("|", "/").replace("\n", " ")[-120:]
                    lines.append(
                        f"| {n:,} | {name} | {label} | | | | | | {row['connections']} "
                        f"| {row['verified_runs']}/{row['runs']} {detail} |"
                    )
                else:
                    lines.append(
                        f"| {n:,} | {name} | {_fmt(row['msgs_per_s'])} "
                        f"| {_fmt(row['msgs_per_s_min'])} | {_fmt(row['msgs_per_s_max'])} "
                        f"| {_fmt(row['wall_s'], 2)} | {_fmt(row['cpu_s'], 2)} "
                        f"| {_fmt(row['peak_rss_mib'], 1)} | {row['connections']} "
                        f"| {row['verified_runs']}/{row['runs']} |"
                    )
        lines.append("")

    if results.ceiling:
        rates = [c["msgs_per_s"] for c in results.ceiling]
        mbs = [c["mb_per_s"] for c in results.ceiling]
        c0 = results.ceiling[0]
        lines += [
            "## The sink's own ceiling",
            "",
            f"{c0['messages']:,} {c0['source']} pushed as pipelined bytes over "
            f"{c0['connections']} connections (sink in its own process): "
            f"**{_fmt(statistics.median(rates))} msgs/s** median "
            f"(min {_fmt(min(rates))}, max {_fmt(max(rates))}), "
            f"{_fmt(statistics.median(mbs))} MB/s; verified: "
            f"{all(c['verified'] for c in results.ceiling)}. "
            "Every sender above stays far below it, so the sink is not the bottleneck "
            "when this figure is well above theirs.",
            "",
        ]

    targets = evaluate_targets(results)
    if targets:
        lines += [
            "## Targets and ratios",
            "",
            "| target | mode | N | ratio (median msgs/s) | required | verdict |",
            "|---|---|---:|---:|---:|---|",
        ]
        for t in targets:
            required = "—" if t["required"] is None else f"≥ {t['required']:g}"
            lines.append(
                f"| {t['target']} ({t['numerator']} / {t['denominator']}) | {t['mode']} "
                f"| {t['n']:,} | {_ratio(t['ratio'], t['required'])} | {required} "
                f"| {t['verdict']} |"
            )
        lines.append("")

    lines += render_provider(results)
    lines += render_attachment(results)
    if not (cfg.provider_only or cfg.attachment_only):
        lines += render_extras(results)
    if senders_run:
        lines += ["## Senders", ""]
        lines += [f"- **{name}**: {SENDERS[name].describe}" for name in cfg.senders]
        lines.append("")
    lines += [
        f"Raw figures: `{_rel(cfg.raw, cfg.results_md.parent)}` (JSON Lines, one line per run).",
    ]
    if cfg.plot is not None and cfg.plot.exists():
        lines += ["", f"![throughput against N]({_rel(cfg.plot, cfg.results_md.parent)})"]
    return "\n".join(lines) + "\n"


PROVIDER_HEADING = "## Provider mode: a relay that limits the rate"


def replace_section(text: str, heading: str, section: list[str]) -> str:
    """`text` with the `## ` section under `heading` replaced by `section` (or inserted).

    A new section goes before "## Also measured" (or "## Senders", or at the end).
    """
    lines = text.splitlines()
    body = [*section] if section else []
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
        if end is None:
            end = next(
                (i for i in range(start + 1, len(lines)) if lines[i].startswith("Raw figures")),
                len(lines),
            )
        lines[start:end] = body
    else:
        at = next(
            (i for i, line in enumerate(lines) if line in ("## Also measured", "## Senders")),
            len(lines),
        )
        lines[at:at] = body
    return "\n".join(lines) + "\n"


def render_provider(results: Results) -> list[str]:
    """Provider mode: each sender against the rate-limiting sink, and issue 13's targets."""
    if not results.provider:
        return []
    cfg = results.config
    limits = cfg.provider_limits
    first = results.provider[0]
    lines = [
        PROVIDER_HEADING,
        "",
        f"Measured on {results.finished or results.started} (UTC) by `{cfg.command}`.",
        "",
        f"The sink as a rate-limiting relay (`bench/sink.py --provider-rate`): a token bucket of "
        f"**{limits.per_minute:g} messages a minute with a burst of {limits.burst}** (a token "
        f"taken at MAIL), at most **{limits.max_connections} connections** per client; beyond "
        f"them it answers `{limits.greeting_reply}` at the greeting (and closes) and "
        f"`{limits.mail_reply}` at MAIL. N = {first['n']:,} letters to {first['addresses']:,} "
        f"addresses; the ideal time is N / rate = {first['ideal_s']:,.0f} s. Refused = MAIL "
        "commands refused for the rate, of all MAIL commands; connections refused at the "
        "greeting are counted apart. A fresh sink and folder per run; every address checked "
        "at the sink.",
        "",
        "| sender | run | wall s | × ideal | MAIL commands | refused MAIL | refused connections "
        "| addresses delivered once | not delivered | twice | campaign's log | exit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for rec in results.provider:
        if "mail_commands" not in rec:
            lines.append(
                f"| {rec['sender']} | {rec['run']} | **FAILED** | | | | | | | | "
                f"{str(rec.get('error', ''))[:100]} | {rec['exit_code']} |"
            )
            continue
        statuses = rec.get("statuses")
        log = ", ".join(f"{v:,} {k}" for k, v in statuses.items()) if statuses else "—"
        wall = _fmt(rec["wall_s"], 1) + (" (timed out)" if rec["timed_out"] else "")
        lines.append(
            f"| {rec['sender']} | {rec['run']} | {wall} | {_ratio(rec['ratio'], None)} "
            f"| {rec['mail_commands']:,} | {rec['refused_mail']:,} ({rec['refused_share']:.1%}) "
            f"| {rec['refused_connections']:,} | {rec['delivered_once']:,} "
            f"| {rec['missing']:,} | {rec['duplicates']:,} | {log} | {rec['exit_code']} |"
        )
    lines.append("")
    targets = evaluate_provider(results)
    if targets:
        lines += [
            "Targets of issue 13, for campaign with its default settings:",
            "",
            "| target | measured | verdict |",
            "|---|---|---|",
        ]
        lines += [f"| {t['target']} | {t['value']} | {t['verdict']} |" for t in targets]
        lines.append("")
    senders = list(dict.fromkeys(rec["sender"] for rec in results.provider))
    lines += ["How each sender meets a refusal:", ""]
    for name in senders:
        rate = ""
        if name == "campaign-rate":
            rate = f" (R = {cfg.provider_rate:g}/min, C = {limits.max_connections or 4})"
        lines.append(
            f"- **{name}**{rate}: {PROVIDER_SENDERS[name].describe}; "
            f"{PROVIDER_BEHAVIOUR.get(name, '')}."
        )
    lines.append("")
    return lines


def _limits_text(name: str, scale: int) -> str:
    for t in EXTRA_TARGETS:
        if t.name == name:
            unit = "events" if name in (LOG_TABLE, LOG_JSON) else "recipients"
            return (
                ", ".join(f"{lim.label} < {lim.below:g} {lim.unit}" for lim in t.limits)
                + f" at {scale:,} {unit}"
            )
    return ""


def render_extras(results: Results) -> list[str]:
    """The "Also measured" section: check, log on a long log, send peak RSS; with targets."""
    cfg = results.config
    if not results.extras:
        if cfg.extras:
            return []
        return [
            "Not measured in this run (`--no-extras`): `campaign check` on 100,000 "
            "recipients, `campaign log` on 1,000,000 events, peak RSS of `campaign send` "
            "at N = 1,000, 10,000 and 100,000.",
            "",
        ]
    rows = summarise_extras(results.extras)
    targets = {t["name"]: t for t in evaluate_extras(results)}
    lines = [
        "## Also measured",
        "",
        "Each a separate process timed from spawn to exit, like the senders (wall, CPU "
        "user + sys, peak RSS from `wait4`); median of the runs, min–max in brackets. "
        "Every run verified: `check` reports every letter rendering; `log --json` prints "
        "one row per recipient with exactly the status counts the log was written with; "
        "the table shows those counts and lists the first and last recipient; each send "
        "verified at the sink like the table above.",
        "",
        "| measurement | scale | runs | wall s | CPU s | peak RSS MiB | target | verdict |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    shown: set[str] = set()
    for row in rows:
        title = EXTRA_TITLES.get(row["name"], row["name"])
        if row["name"] in (LOG_TABLE, LOG_JSON):
            scale = f"{row['events']:,} events, {row['n']:,} recipients"
        elif row["name"] == SEND_RSS:
            scale = f"N = {row['n']:,}, K = {cfg.concurrency}"
        else:
            scale = f"{row['n']:,} recipients"
        target = ""
        verdict = ""
        t = targets.get(row["name"])
        if t is not None and t["measured_at"] == _scale(row) and row["name"] not in shown:
            shown.add(row["name"])
            target = _limits_text(row["name"], t["scale"])
            verdict = t["verdict"]
        elif row["name"] == SEND_RSS:
            target = "(flatness)"
            verdict = "reported"
        note = f" ({row['note']})" if row["note"] else ""
        runs = f"{row['verified_runs']}/{row['runs']}{note}"
        if not row["verified"] or "wall_s" not in row:
            detail = str(row["detail"]).replace("|", "/")[:160]
            lines.append(f"| {title} | {scale} | {runs} | **FAILED** | | | {target} | {detail} |")
            continue
        wall = _fmt(row["wall_s"], 2)
        if row["runs"] > 1:
            wall += f" ({_fmt(row['wall_s_min'], 2)}–{_fmt(row['wall_s_max'], 2)})"
        rss = _fmt(row["peak_rss_mib"], 1)
        if row["runs"] > 1 and row["peak_rss_mib_max"] != row["peak_rss_mib"]:
            rss += f" (max {_fmt(row['peak_rss_mib_max'], 1)})"
        lines.append(
            f"| {title} | {scale} | {runs} | {wall} | {_fmt(row['cpu_s'], 2)} | {rss} "
            f"| {target} | {verdict} |"
        )
    lines.append("")
    sends = [r for r in rows if r["name"] == SEND_RSS and r.get("peak_rss_mib") is not None]
    if len(sends) >= 2:
        lo, hi = sends[0], sends[-1]
        data_mib = ""
        yaml_path = cfg.work / "data" / f"n{hi['n']}-seed{cfg.seed}" / "recipients.yaml"
        if yaml_path.exists():
            data_mib = f" (its recipients.yaml is {yaml_path.stat().st_size / 2**20:.1f} MiB)"
        lines += [
            "`campaign send` peak RSS against N: "
            + ", ".join(f"{r['n']:,} → {_fmt(r['peak_rss_mib'], 1)} MiB" for r in sends)
            + f"; from {lo['n']:,} to {hi['n']:,} recipients it grows by "
            f"{_fmt(hi['peak_rss_mib'] - lo['peak_rss_mib'], 1)} MiB{data_mib}. "
            "Throughput of these runs (median): "
            + ", ".join(f"{r['n']:,}: {_fmt(r.get('msgs_per_s'))} msgs/s" for r in sends)
            + ".",
            "",
        ]
    g = results.genlog
    if g:
        ev = g.get("event_counts", {})
        lines += [
            f"The log: {g['events']:,} lines written by `bench/genlog.py` (not timed, "
            f"{g['seconds']:.0f} s, {g['bytes'] / 2**20:,.0f} MiB) for the generated "
            f"{g['recipients']:,}-recipient campaign, in the exact record shapes `campaign "
            f"send` writes: a provider that takes {g.get('quota', 0.3):.0%} of the campaign "
            "per hourly run and "
            "answers 451 beyond it (each deferred message tried four times a run), a few "
            "greylisted tries, a few 550 refusals (partial / failed), and the last run "
            f"killed mid-way (attempts without results: unknown). {g['runs']} runs; "
            + ", ".join(f"{v:,} {k}" for k, v in ev.items())
            + ". Expected per recipient: "
            + ", ".join(f"{v:,} {k}" for k, v in g["expected"].items())
            + ".",
            "",
        ]
    return lines


def _fs_probe_text(env: dict[str, Any]) -> str:
    start = env.get("fs_probe_start") or {}
    probes = start.get("ms_per_file") or []
    if not probes:
        return ""
    text = f" Creating a 10 KB file there took {probes[-1]:.2f} ms at the start"
    if start.get("waited_s"):
        text += f" (after waiting {start['waited_s']:g} s: {probes[0]:.2f} ms at first)"
    if env.get("fs_probe_end") is not None:
        text += f" and {env['fs_probe_end']:.2f} ms at the end"
    return text + "."


def _load(values: Sequence[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "unknown"


def _rel(path: Path, start: Path = ROOT) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)


def plot(results: Results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cfg = results.config
    summary = [r for r in results.summary() if r["status"] == "ok"]
    modes = [(LOOPBACK, "loopback")]
    if cfg.latency > 0:
        modes.append((LATENCY, f"latency {cfg.latency * 1000:g} ms"))
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
    for ax, (mode, title) in zip(axes[0], modes, strict=True):
        for name in cfg.senders:
            rows = sorted(
                (r for r in summary if r["mode"] == mode and r["sender"] == name),
                key=lambda r: r["n"],
            )
            if not rows:
                continue
            xs = [r["n"] for r in rows]
            ys = [r["msgs_per_s"] for r in rows]
            err = [
                [y - r["msgs_per_s_min"] for y, r in zip(ys, rows, strict=True)],
                [r["msgs_per_s_max"] - y for y, r in zip(ys, rows, strict=True)],
            ]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("recipients N")
        ax.set_ylabel("messages / s, end to end (median, min–max)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(
        f"campaign benchmark, {results.environment.get('cpu_count')} CPUs, K={cfg.concurrency}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(results: Results) -> None:
    cfg = results.config
    cfg.raw.parent.mkdir(parents=True, exist_ok=True)
    with cfg.raw.open("w", encoding="utf-8") as fh:
        meta = {
            "kind": "meta",
            "started": results.started,
            "finished": results.finished,
            "command": cfg.command,
            "environment": results.environment,
            "skipped": results.skipped,
        }
        fh.write(json.dumps(meta, ensure_ascii=False) + "\n")
        extra_meta = [results.genlog] if results.genlog else []
        for rec in [
            *results.records,
            *results.ceiling,
            *extra_meta,
            *results.extras,
            *evaluate_extras(results),
            *results.provider,
            *evaluate_provider(results),
            *results.attachment,
        ]:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    if cfg.provider_only or cfg.attachment_only:
        cfg.plot = None  # nothing to plot; the file keeps the last full run's figure
    if cfg.plot is not None and not plot(results, cfg.plot):
        _log(cfg, "matplotlib not importable: no plot")
        cfg.plot = None
    cfg.results_md.parent.mkdir(parents=True, exist_ok=True)
    if cfg.provider_only and cfg.results_md.exists():
        # Only the provider section is new: keep every other figure the file holds.
        text = replace_section(
            cfg.results_md.read_text("utf-8"), PROVIDER_HEADING, render_provider(results)
        )
    elif cfg.attachment_only and cfg.results_md.exists():
        text = replace_section(
            cfg.results_md.read_text("utf-8"), ATTACHMENT_HEADING, render_attachment(results)
        )
    else:
        text = render_markdown(results)
    cfg.results_md.write_text(text, "utf-8")
    _log(cfg, f"wrote {cfg.results_md} and {cfg.raw}" + (f" and {cfg.plot}" if cfg.plot else ""))


# --------------------------------------------------------------------------- measure


def measure_command(
    template: Sequence[str], n: int, runs: int, cfg: Config
) -> list[dict[str, Any]]:
    """Run any command on a generated campaign of N; placeholders {yaml} {dir} {campaign} {python}.

    For the figures measured later: e.g. `campaign check` on 100,000 recipients.
    """
    data = generate(n, cfg.work / "data" / f"n{n}-seed{cfg.seed}", cfg.seed)
    out = []
    for rep in range(1, runs + 1):
        run_dir = fresh_run_dir(cfg, f"measure-n{n}-{rep}")
        values = {
            "yaml": str(data.yaml_path),
            "dir": str(data.outdir),
            "run": str(run_dir),
            "python": cfg.python,
            "campaign": shlex.join(campaign_command(cfg.python)),
        }
        argv: list[str] = []
        for part in template:
            if part == "{campaign}":
                argv += campaign_command(cfg.python)
            else:
                argv.append(part.format(**values))
        r = measure_process(
            argv,
            cwd=run_dir,
            timeout=cfg.timeout or 3600,
            stdout=run_dir / "stdout.txt",
            stderr=run_dir / "stderr.txt",
        )
        rec = {
            "kind": "measure",
            "n": n,
            "run": rep,
            "argv": argv,
            "exit_code": r.exit_code,
            "wall_s": round(r.wall_s, 4),
            "cpu_s": round(r.cpu_s, 3),
            "peak_rss_mib": round(r.peak_rss_kib / 1024, 1),
            "timed_out": r.timed_out,
            "stderr_tail": _tail(run_dir / "stderr.txt", 300),
        }
        out.append(rec)
        print(json.dumps(rec, ensure_ascii=False), flush=True)
    return out


# --------------------------------------------------------------------------- CLI


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str]) -> Config:
    p = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--n", type=_ints, help="recipients per campaign, e.g. 1000,10000")
    p.add_argument("--runs", type=int, help="runs per figure (default 3)")
    p.add_argument("--concurrency", type=int, default=8, help="K connections (default 8)")
    p.add_argument("--latency", type=float, default=0.025, help="latency mode delay; 0 = off")
    p.add_argument("--latency-n", type=_ints, help="N for latency mode (default 500)")
    p.add_argument("--no-latency", action="store_true", help="skip latency mode")
    p.add_argument("--senders", help=f"comma-separated subset of {','.join(SENDERS)}")
    p.add_argument(
        "--quick", action="store_true", help="N=200, 1 run, latency N=50, extras at small scale"
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for the senders")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, help="scratch dir (default bench/results/work)")
    p.add_argument("--results-md", type=Path, help="default bench/RESULTS.md")
    p.add_argument("--raw", type=Path, help="default bench/results/raw.jsonl")
    p.add_argument("--plot", type=Path, help="default bench/throughput.png")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-ceiling", action="store_true", help="skip the sink ceiling")
    p.add_argument("--timeout", type=float, help="seconds per run (default grows with N)")
    p.add_argument("--keep-runs", action="store_true", help="keep every run's directory")
    p.add_argument("--no-extras", action="store_true", help="skip the 'also measured' figures")
    p.add_argument(
        "--only-extras", action="store_true", help="only the 'also measured' figures, no senders"
    )
    p.add_argument("--check-n", type=int, help="recipients for `campaign check` (100000)")
    p.add_argument("--log-n", type=int, help="recipients of the long log's campaign (100000)")
    p.add_argument("--log-events", type=int, help="lines of the long log (1000000)")
    p.add_argument("--rss-n", type=_ints, help="N for send peak RSS (1000,10000,100000)")
    p.add_argument("--extra-runs", type=int, help="runs of check, log and send RSS (default 3)")
    p.add_argument("--no-provider", action="store_true", help="skip provider mode")
    p.add_argument(
        "--provider-only", action="store_true", help="only provider mode (issue 13), no other"
    )
    p.add_argument("--provider-n", type=int, help="letters in provider mode (2000)")
    p.add_argument(
        "--provider-limits",
        help="RATE,BURST,CONNECTIONS of the relay, e.g. 600,20,2 (the default)",
    )
    p.add_argument(
        "--provider-rate", type=float, help="campaign-rate's --rate (default 95%% of RATE)"
    )
    p.add_argument(
        "--provider-senders",
        help=f"comma-separated subset of {','.join(PROVIDER_SENDERS)}",
    )
    p.add_argument("--provider-runs", type=int, help="runs per provider sender (1)")
    p.add_argument("--no-attachment", action="store_true", help="skip the attachment case")
    p.add_argument(
        "--attachment-only",
        action="store_true",
        help="only the attachment case (issue 15): a PDF on every letter against none",
    )
    p.add_argument("--attachment-n", type=int, help="letters in the attachment case (1000)")
    p.add_argument("--attachment-kb", type=int, help="KiB of the PDF every letter carries (200)")
    p.add_argument("--attachment-runs", type=int, help="runs of each attachment case (3)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(list(argv))
    cfg = Config()
    if a.quick:
        cfg = replace(
            cfg,
            ns=[200],
            runs=1,
            latency_ns=[50],
            ceiling_messages=2000,
            ceiling_runs=1,
            check_n=1000,
            check_runs=1,
            log_n=1000,
            log_events=10_000,
            log_runs=1,
            rss_ns=[200, 1000],
            rss_runs=1,
            fs_settle_max_s=0.0,
        )
    cfg.ns = a.n or cfg.ns
    cfg.runs = a.runs or cfg.runs
    cfg.concurrency = a.concurrency
    cfg.latency = 0.0 if a.no_latency else a.latency
    cfg.latency_ns = a.latency_n or cfg.latency_ns
    cfg.senders = [s.strip() for s in a.senders.split(",")] if a.senders else cfg.senders
    cfg.python = a.python
    cfg.seed = a.seed
    cfg.work = a.work or cfg.work
    cfg.results_md = a.results_md or cfg.results_md
    cfg.raw = a.raw or cfg.raw
    cfg.plot = None if a.no_plot else (a.plot or cfg.plot)
    cfg.ceiling = not a.no_ceiling
    cfg.timeout = a.timeout
    cfg.keep_runs = a.keep_runs
    cfg.extras = not a.no_extras
    cfg.only_extras = a.only_extras
    if a.only_extras and a.no_extras:
        p.error("--only-extras and --no-extras exclude each other")
    cfg.check_n = a.check_n if a.check_n is not None else cfg.check_n
    cfg.log_n = a.log_n if a.log_n is not None else cfg.log_n
    cfg.log_events = a.log_events if a.log_events is not None else cfg.log_events
    cfg.rss_ns = a.rss_n if a.rss_n is not None else cfg.rss_ns
    if a.extra_runs:
        cfg.check_runs = cfg.log_runs = cfg.rss_runs = a.extra_runs
    if a.provider_only and (a.no_provider or a.only_extras):
        p.error("--provider-only excludes --no-provider and --only-extras")
    cfg.provider = not a.no_provider
    cfg.provider_only = a.provider_only
    if a.quick:
        cfg.provider_n = 200
    cfg.provider_n = a.provider_n or cfg.provider_n
    if a.provider_limits:
        try:
            rate, burst, conns = a.provider_limits.split(",")
            cfg.provider_limits = ProviderLimits(float(rate), int(burst), int(conns))
        except ValueError as err:
            p.error(f"--provider-limits: give RATE,BURST,CONNECTIONS, e.g. 600,20,2 ({err})")
    cfg.provider_rate = a.provider_rate or round(cfg.provider_limits.per_minute * 0.95, 1)
    if a.provider_senders:
        cfg.provider_senders = [x.strip() for x in a.provider_senders.split(",")]
        unknown = [x for x in cfg.provider_senders if x not in PROVIDER_SENDERS]
        if unknown:
            p.error(f"unknown provider sender(s) {unknown}; known: {list(PROVIDER_SENDERS)}")
    cfg.provider_runs = a.provider_runs or cfg.provider_runs
    exclusive = [a.provider_only, a.only_extras, a.attachment_only]
    if sum(exclusive) > 1 or (a.attachment_only and a.no_attachment):
        p.error("--attachment-only excludes --no-attachment, --provider-only and --only-extras")
    cfg.attachment = not a.no_attachment
    cfg.attachment_only = a.attachment_only
    if a.quick:
        cfg.attachment_n, cfg.attachment_kb, cfg.attachment_runs = 100, 50, 1
    cfg.attachment_n = a.attachment_n or cfg.attachment_n
    cfg.attachment_kb = a.attachment_kb or cfg.attachment_kb
    cfg.attachment_runs = a.attachment_runs or cfg.attachment_runs
    cfg.quiet = a.quiet
    cfg.command = shlex.join(["python", "bench/run.py", *argv])
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 when every run that could run was verified at the sink."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["measure"]:
        p = argparse.ArgumentParser(prog="bench/run.py measure")
        p.add_argument("--n", type=int, required=True)
        p.add_argument("--runs", type=int, default=3)
        p.add_argument("--python", default=sys.executable)
        p.add_argument("--work", type=Path, default=BENCH / "results" / "work")
        p.add_argument("--timeout", type=float, default=3600)
        p.add_argument("--keep-runs", action="store_true", help="keep the run directories")
        p.add_argument("command", nargs=argparse.REMAINDER)
        a = p.parse_args(args[1:])
        command = a.command[1:] if a.command[:1] == ["--"] else a.command
        if not command:
            p.error("give the command after --")
        cfg = Config(python=a.python, work=a.work, timeout=a.timeout, keep_runs=a.keep_runs)
        recs = measure_command(command, a.n, a.runs, cfg)
        for note in remove_runs(cfg):
            print(note, file=sys.stderr)
        return 0 if all(r["exit_code"] == 0 for r in recs) else 1
    cfg = parse_args(args)
    results = run_benchmark(cfg)
    write_outputs(results)
    # Only now: deleting run directories earlier would slow the runs after each deletion.
    for note in remove_runs(cfg, results.failed_run_dirs()):
        _log(cfg, note)
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(main())
