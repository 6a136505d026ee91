"""The report's page: one self-contained HTML file, safe to open and to print.

`render_report(data)` yields the page in chunks; `write_report(data, out)` writes it atomically.
Inline CSS (with a print stylesheet), an inline SVG chart and a small inline script, allowed by
the page's own Content-Security-Policy and nothing else: no request leaves when it is opened.
Every value that came from the log, the campaign file or a server is escaped on the way out.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from campaign.report import (
    ArchiveCheck,
    RecipientRecord,
    ReportData,
    Timeline,
)
from campaign.safefiles import write_file
from campaign.sendlog import Status

_STATUS_ORDER: tuple[str, ...] = tuple(Status)

# A server reply longer than this is cut on the page (the log keeps it whole).
REPLY_LIMIT = 2000
_ALWAYS_SHOWN = 4  # sent, deferred, failed, unknown appear in the legend even at zero


def _control_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]:
        if chr(code) not in "\n\t":
            table[code] = f"\\x{code:02x}"
    # Bidirectional overrides and isolates reorder what is shown (CVE-2021-42574, "Trojan
    # Source"); line and paragraph separators break lines unseen.
    for code in [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]:
        table[code] = f"\\u{code:04x}"
    for code in range(0xD800, 0xE000):  # lone surrogates from JSON "\ud800" cannot be encoded
        table[code] = f"\\u{code:04x}"
    return table


_CONTROLS = _control_table()
_NEEDS_TRANSLATION = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)


def visible(text: str) -> str:
    """`text` with control characters written out (`\\x1b`); newlines and tabs kept."""
    if _NEEDS_TRANSLATION.search(text) is None:
        return text
    return text.translate(_CONTROLS)


def esc(value: object) -> str:
    """Any value as HTML text: control characters written out, then HTML-escaped."""
    return html.escape(visible(str(value)), quote=True)


def _shorten(text: str, limit: int = REPLY_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters in the log)"


# Okabe & Ito's palette (safe for the common colour-vision deficiencies); every status is also
# written out, with a sign, and the failing series are hatched for a grey printer.
_STYLE = """
:root{--sent:#009e73;--partial:#f0e442;--deferred:#e69f00;--failed:#d55e00;--unknown:#cc79a7;
--pending:#bbbbbb;--sending:#56b4e9;--bounced:#56b4e9;--replied:#0072b2;--ink:#1a1a1a;
--muted:#595959;--rule:#c8c8c8}
*{box-sizing:border-box}
html{color:var(--ink);background:#fff;font:15px/1.45 "DejaVu Sans","Liberation Sans",Arial,
sans-serif;-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{margin:0 auto;padding:1.5rem;max-width:72rem}
h1{font-size:1.6rem;margin:0 0 .5rem}h2{font-size:1.25rem;margin:2rem 0 .6rem;
border-bottom:2px solid var(--ink)}h3{font-size:1.05rem;margin:0 0 .3rem}
code,.mono{font-family:"DejaVu Sans Mono","Liberation Mono",monospace;font-size:.86em;
overflow-wrap:anywhere}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:0}
dl.meta dt,dl.proof dt{font-weight:bold}dl.meta dd,dl.proof dd{margin:0;overflow-wrap:anywhere}
ul.counts{list-style:none;padding:0;margin:.5rem 0;display:flex;flex-wrap:wrap;gap:.5rem}
ul.counts li{padding:.35rem .7rem;border:2px solid;border-radius:.3rem;min-width:6.5rem}
ul.counts .n{font-size:1.5rem;font-weight:bold;margin-right:.25rem}
li.zero{opacity:.55}
.badge{display:inline-block;padding:0 .4rem;border:1.5px solid;border-radius:.25rem;
white-space:nowrap;font-weight:bold;font-size:.85em}
.b-sent,.b-accepted,.b-matches{background:#d5efe6;border-color:#00664a}
.b-partial{background:#fbf6c4;border-color:#8a7f00}
.b-deferred{background:#fbe8c2;border-color:#a36f00}
.b-failed,.b-refused,.b-differs,.b-missing{background:#f8d8c6;border-color:#a34100}
.b-unknown{background:#f4dcea;border-color:#94477a}
.b-pending,.b-none,.b-not-checked{background:#eeeeee;border-color:#777777}
.b-sending,.b-bounced{background:#d8ecf8;border-color:#2a77a8}
.b-replied{background:#d2e4f3;border-color:#00508a}
ul.next li{margin:.2rem 0}
.note{border-left:4px solid var(--deferred);padding:.2rem .6rem;background:#fdf4e3}
svg.chart{width:100%;height:auto;max-height:20rem;border:1px solid var(--rule)}
svg .axis{stroke:var(--ink);stroke-width:1}svg .grid{stroke:var(--rule);stroke-width:1}
svg text{font-size:11px;fill:var(--ink)}
.s-sent{fill:var(--sent)}.s-deferred{fill:var(--deferred)}.s-failed{fill:url(#pat-failed)}
.s-unknown{fill:url(#pat-unknown)}.s-bounced{fill:url(#pat-bounced)}.s-replied{fill:var(--replied)}
.pf-failed{fill:var(--failed)}.pf-unknown{fill:var(--unknown)}.pf-bounced{fill:var(--bounced)}
.pl{fill:#000;fill-opacity:.45}
ul.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1rem;margin:.4rem 0}
ul.legend svg{width:1rem;height:1rem;vertical-align:-.15rem;margin-right:.3rem}
table{border-collapse:collapse;width:100%}
table.addresses,table.tests{table-layout:fixed}
.c-address{width:24%}.c-outcome{width:15%}.c-reply{width:33%}.c-queue{width:10%}.c-when{width:18%}
.c-time{width:16%}.c-of{width:12%}.c-to{width:16%}.c-test-reply{width:18%}.c-letter{width:26%}
.sha{word-break:break-all}
th,td{text-align:left;vertical-align:top;padding:.25rem .4rem;border-bottom:1px solid var(--rule)}
th{border-bottom:2px solid var(--ink)}td.num,th.num{text-align:right}
th button{font:inherit;font-weight:bold;border:0;background:none;padding:0;cursor:pointer}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
.reply{white-space:pre-wrap;overflow-wrap:anywhere}
#controls{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;margin:.5rem 0}
article.recipient{border:1px solid var(--rule);border-left:6px solid var(--pending);
padding:.7rem 1rem;margin:1rem 0;break-inside:avoid}
article.st-sent{border-left-color:var(--sent)}article.st-partial{border-left-color:#b3a800}
article.st-deferred{border-left-color:var(--deferred)}
article.st-failed{border-left-color:var(--failed)}
article.st-unknown{border-left-color:var(--unknown)}
article.st-sending{border-left-color:var(--sending)}
.rid{font-weight:normal;color:var(--muted);font-size:.9em}
.org{margin:0 0 .4rem;color:var(--muted)}
dl.proof{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:.6rem 0 0}
footer{margin-top:2rem;border-top:2px solid var(--ink);padding-top:.5rem;font-size:.9em}
.print-only{display:none}
@media print{
html{font-size:10.5pt}body{max-width:none;padding:0}
#controls,#table,.screen-only{display:none!important}
.print-only{display:block}
h2{break-after:avoid}
#recipients h2,#gone h2{break-before:page}
article.recipient:first-of-type{break-before:auto}
article.recipient{break-before:page;margin:0;border-width:1px 1px 1px 6px}
#after{break-before:page}
details>*{display:block}
svg.chart{max-height:none}
a{color:inherit;text-decoration:none}
}
"""

_SCRIPT = """
"use strict";
(function () {
  var controls = document.getElementById("controls");
  var table = document.getElementById("table");
  if (!controls || !table) { return; }
  controls.hidden = false;
  var status = document.getElementById("f-status");
  var text = document.getElementById("f-text");
  var shown = document.getElementById("f-shown");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var blocks = {};
  document.querySelectorAll("article.recipient").forEach(function (block) {
    blocks[block.id] = block;
  });
  function apply() {
    var wanted = status.value, needle = text.value.trim().toLowerCase(), count = 0;
    rows.forEach(function (row) {
      var keep = (!wanted || row.dataset.status === wanted) &&
        (!needle || row.textContent.toLowerCase().indexOf(needle) >= 0);
      row.hidden = !keep;
      var block = blocks[row.dataset.block];
      if (block) { block.hidden = !keep; }
      if (keep) { count += 1; }
    });
    shown.textContent = count + " of " + rows.length + " listed";
  }
  function sortBy(header) {
    var key = header.dataset.key, numeric = header.dataset.numeric === "1";
    var direction = header.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th[aria-sort]").forEach(function (h) {
      h.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = a.dataset[key], y = b.dataset[key];
      if (numeric) { x = Number(x); y = Number(y); }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return order * direction || Number(a.dataset.order) - Number(b.dataset.order);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  table.querySelectorAll("th[data-key] button").forEach(function (button) {
    button.addEventListener("click", function () { sortBy(button.parentNode); });
  });
  status.addEventListener("change", apply);
  text.addEventListener("input", apply);
  apply();
}());
"""

_GLYPHS = {
    "sent": "✓",
    "accepted": "✓",
    "partial": "◐",
    "deferred": "↻",
    "failed": "✗",
    "refused": "✗",
    "unknown": "?",
    "pending": "…",
    "sending": "→",
    "bounced": "↩",
    "replied": "✉",
}
_CHECK_TEXT = {
    ArchiveCheck.MATCHES: "matches the archived file",
    ArchiveCheck.DIFFERS: "DIFFERS from the archived file",
    ArchiveCheck.MISSING: "archived file not found",
    ArchiveCheck.NOT_CHECKED: "archived file not checked",
    ArchiveCheck.NONE: "nothing archived",
}
_CODE_SPAN = re.compile(r"`([^`]+)`")


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def _css_string(text: str) -> str:
    """`text` as a CSS string literal: anything but plain characters as a hex escape."""
    out = []
    for char in text:
        if char.isascii() and (char.isalnum() or char in " .,:;_-+/()"):
            out.append(char)
        else:
            out.append(f"\\{ord(char):x} ")
    return '"' + "".join(out) + '"'


def _badge(word: str) -> str:
    glyph = _GLYPHS.get(word)
    label = f"{glyph} {word}" if glyph else word
    return f'<span class="badge b-{_slug(word)}">{esc(label)}</span>'


def _slug(word: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", str(word).lower())


def _with_code(text: str) -> str:
    """Escaped text whose `backquoted` parts become <code>."""
    return _CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", esc(text))


def _time(value: str | None) -> str:
    """A time from the log, kept exact in `datetime`, shown with a space and `UTC`."""
    if not value:
        return "—"
    shown = value.replace("T", " ", 1)
    if shown.endswith("+00:00"):
        shown = shown[:-6] + " UTC"
    return f'<time datetime="{esc(value)}">{esc(shown)}</time>'


def _reply(code: int | None, reply: str) -> str:
    text = f"{code} {reply}" if code is not None else reply
    return esc(_shorten(text)) if text else "—"


def render_report(data: ReportData) -> Iterator[str]:
    """The page as chunks of HTML, in order; nothing in it loads or runs from outside."""
    page_style = (
        "@page{size:A4;margin:16mm 14mm 18mm;"
        "@bottom-left{content:"
        + _css_string(
            f"{data.campaign} · report made {data.made_at} · log {data.log_path}"
            f" sha256 {data.log_sha256}"
        )
        + ";font-size:7pt;color:#444}"
        '@bottom-right{content:"page " counter(page) " of " counter(pages);font-size:7pt;'
        "white-space:nowrap}}"
    )
    style = _STYLE + page_style
    policy = (
        f"default-src 'none'; style-src '{_digest(style)}'; script-src '{_digest(_SCRIPT)}';"
        " base-uri 'none'; form-action 'none'"
    )
    yield (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Delivery report: {esc(data.campaign)}</title>\n"
        f"<style>{style}</style>\n</head>\n<body>\n"
    )
    yield _header(data)
    yield _glance(data)
    yield _chart_section(data.timeline)
    yield from _recipients(data)
    yield _gone(data)
    yield '<div id="after">\n'
    yield _collapsed(data)
    yield _test_sends(data)
    yield _notes(data)
    yield _footer(data)
    yield "</div>\n"
    yield f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"


def write_report(data: ReportData, out: Path) -> None:
    """Write the page to `out`, atomically: a reader sees the old file or the whole new one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Bounded (at most LIST_LIMIT recipients are drawn), so one string; never through a link.
    write_file(out, "".join(render_report(data)).encode("utf-8"))


def _header(data: ReportData) -> str:
    period = f"{_time(data.period[0])} to {_time(data.period[1])}" if data.period else "nothing yet"
    return (
        f'<header>\n<h1>Delivery report: {esc(data.campaign)}</h1>\n<dl class="meta">\n'
        f"<dt>Subject</dt><dd>{esc(data.subject)}</dd>\n"
        f"<dt>From</dt><dd>{esc(data.sender)}</dd>\n"
        f"<dt>Period covered</dt><dd>{period}</dd>\n"
        f"<dt>Recipients</dt><dd>{data.total}</dd>\n"
        f"<dt>Report made</dt><dd>{_time(data.made_at)}</dd>\n"
        "</dl>\n</header>\n"
    )


def _glance(data: ReportData) -> str:
    parts = ['<section id="glance">\n<h2>At a glance</h2>\n<ul class="counts">\n']
    for status, count in data.counts:
        if count == 0 and status == Status.SENDING:
            continue  # only while a run is in progress
        zero = " zero" if count == 0 else ""
        parts.append(
            f'<li class="count b-{_slug(status)}{zero}" data-status="{esc(status)}"'
            f' data-count="{count}"><span class="glyph">{esc(_GLYPHS.get(status, ""))}</span>'
            f' <span class="n">{count}</span> <span class="label">{esc(status)}</span></li>\n'
        )
    parts.append("</ul>\n")
    if data.test_send_total:
        parts.append(
            f'<p id="test-count">Also {data.test_send_total} test send(s) with'
            " <code>--test-to</code>, not counted above (see Test sends).</p>\n"
        )
    if data.live:
        parts.append(f'<p class="note">A run is in progress: {esc(data.live)}.</p>\n')
    parts.append("<h3>What to do next</h3>\n")
    if data.next_steps:
        parts.append('<ul class="next">\n')
        parts.extend(f"<li>{_with_code(step)}</li>\n" for step in data.next_steps)
        parts.append("</ul>\n")
    else:
        parts.append("<p>Nothing: every letter was accepted.</p>\n")
    parts.append("</section>\n")
    return "".join(parts)


# The chart's drawing area, in SVG user units.
_W, _H = 760, 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 14, 36


def _nice_ceiling(value: int) -> int:
    if value <= 1:
        return 1
    power = int(10 ** (len(str(value)) - 1))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _bucket_label(moment: datetime, width: timedelta) -> str:
    return moment.strftime("%Y-%m-%d" if width >= timedelta(days=1) else "%Y-%m-%d %H:%M")


def _patterns() -> str:
    return (
        "<defs>"
        '<pattern id="pat-failed" width="6" height="6" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(45)"><rect width="6" height="6" class="pf-failed"/>'
        '<rect width="2" height="6" class="pl"/></pattern>'
        '<pattern id="pat-unknown" width="5" height="5" patternUnits="userSpaceOnUse">'
        '<rect width="5" height="5" class="pf-unknown"/><circle cx="2.5" cy="2.5" r="1.1"'
        ' class="pl"/></pattern>'
        '<pattern id="pat-bounced" width="6" height="6" patternUnits="userSpaceOnUse">'
        '<rect width="6" height="6" class="pf-bounced"/><rect width="6" height="1.5" class="pl"/>'
        '<rect width="1.5" height="6" class="pl"/></pattern>'
        "</defs>"
    )


def _chart_section(timeline: Timeline) -> str:
    totals = timeline.totals()
    shown = [j for j, total in enumerate(totals) if total or j < _ALWAYS_SHOWN]
    parts = ['<section id="timeline">\n<h2>Over time</h2>\n']
    if timeline.start is None:
        parts.append("<p>No server has answered yet: nothing to draw.</p>\n</section>\n")
        return "".join(parts)
    width_text = _duration(timeline.width)
    parts.append(
        f"<p>Server answers per address, per {width_text} (UTC), stacked by outcome. An"
        " attempt with no answer in the log counts as unknown; test sends are not drawn.</p>\n"
    )
    parts.append(_svg(timeline, shown))
    parts.append('<ul class="legend">\n')
    for j in shown:
        name = timeline.series[j]
        parts.append(
            f'<li><svg viewBox="0 0 10 10" aria-hidden="true">'
            f'<rect class="swatch s-{name}" width="10" height="10"/></svg>'
            f"{esc(name)}: {totals[j]}</li>\n"
        )
    parts.append("</ul>\n")
    if timeline.undated:
        parts.append(
            f"<p>{timeline.undated} answer(s) had no readable time and are not drawn.</p>\n"
        )
    parts.append(_chart_numbers(timeline, shown))
    parts.append("</section>\n")
    return "".join(parts)


def _duration(width: timedelta) -> str:
    minutes = int(width.total_seconds() // 60)
    if minutes % 1440 == 0:
        days = minutes // 1440
        return "day" if days == 1 else f"{days} days"
    if minutes % 60 == 0:
        hours = minutes // 60
        return "hour" if hours == 1 else f"{hours} hours"
    return "minute" if minutes == 1 else f"{minutes} minutes"


def _svg(timeline: Timeline, shown: Sequence[int]) -> str:
    assert timeline.start is not None
    count = len(timeline.buckets)
    peak = max((sum(bucket) for bucket in timeline.buckets), default=0)
    top = _nice_ceiling(peak)
    plot_w = _W - _LEFT - _RIGHT
    plot_h = _H - _TOP - _BOTTOM
    slot = plot_w / count
    bar = min(max(slot * 0.8, 1.0), 40.0)
    title = f"Server answers over time, {sum(map(sum, timeline.buckets))} in all"
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-labelledby="chart-title"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{esc(title)}</title>',
        _patterns(),
    ]
    for fraction in (0, 0.5, 1):
        y = _TOP + plot_h * (1 - fraction)
        value = top * fraction
        label = f"{value:g}" if value == int(value) else f"{value:.1f}"
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    for i, bucket in enumerate(timeline.buckets):
        x = _LEFT + slot * i + (slot - bar) / 2
        base = float(_TOP + plot_h)
        start = timeline.start + timeline.width * i
        when = _bucket_label(start, timeline.width)
        for j in shown:
            n = bucket[j]
            if not n:
                continue
            height = plot_h * n / top
            base -= height
            name = timeline.series[j]
            parts.append(
                f'<rect class="mark s-{name}" x="{x:.2f}" y="{base:.2f}" width="{bar:.2f}"'
                f' height="{height:.2f}" data-series="{name}" data-count="{n}"'
                f' data-start="{start.isoformat()}"><title>{esc(when)} UTC: {n} {esc(name)}'
                "</title></rect>"
            )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_TOP + plot_h}"'
        f' y2="{_TOP + plot_h}"/>'
        f'<line class="axis" x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_TOP + plot_h}"/>'
    )
    last = timeline.start + timeline.width * (count - 1)
    labels = [(0, "start", timeline.start)]
    if count > 1:
        labels.append((count - 1, "end", last))
    for i, anchor, moment in labels:
        x = _LEFT + slot * i + slot / 2
        x = min(max(x, float(_LEFT)), float(_W - _RIGHT))
        parts.append(
            f'<text x="{x:.1f}" y="{_H - 14}" text-anchor="{anchor}">'
            f"{esc(_bucket_label(moment, timeline.width))}</text>"
        )
    parts.append("</svg>\n")
    return "".join(parts)


def _chart_numbers(timeline: Timeline, shown: Sequence[int]) -> str:
    assert timeline.start is not None
    head = "".join(f'<th class="num">{esc(timeline.series[j])}</th>' for j in shown)
    parts = [
        '<details class="screen-only"><summary>The chart\'s numbers</summary>\n'
        f'<table class="numbers"><thead><tr><th>from (UTC)</th>{head}</tr></thead><tbody>\n'
    ]
    for i, bucket in enumerate(timeline.buckets):
        if not any(bucket):
            continue
        start = timeline.start + timeline.width * i
        cells = "".join(f'<td class="num">{bucket[j]}</td>' for j in shown)
        parts.append(f"<tr><td>{esc(_bucket_label(start, timeline.width))}</td>{cells}</tr>\n")
    parts.append("</tbody></table>\n</details>\n")
    return "".join(parts)


def _recipients(data: ReportData) -> Iterator[str]:
    listed = len(data.recipients)
    yield '<section id="recipients">\n<h2>Per recipient</h2>\n'
    if listed < data.total:
        yield (
            f"<p>{listed} of {data.total} recipients are listed one by one: those that need"
            " attention first; the others are counted at the end of the page.</p>\n"
        )
    yield (
        '<p class="screen-only">Anyone holding the sent archive can check a letter:'
        " <code>sha256sum outbox/sent/FILE.eml</code> must print the SHA-256 shown.</p>\n"
    )
    if not listed:
        yield "<p>No recipient to list.</p>\n</section>\n"
        return
    statuses = sorted({r.status for r in data.recipients}, key=_status_rank)
    options = "".join(f'<option value="{esc(s)}">{esc(s)}</option>' for s in statuses)
    yield (
        '<div id="controls" hidden>'
        '<label>Status <select id="f-status"><option value="">all</option>'
        f"{options}</select></label>"
        '<label>Find <input id="f-text" type="search" placeholder="id, name, address, reply">'
        '</label><span id="f-shown" aria-live="polite"></span></div>\n'
    )
    yield (
        '<table id="table"><thead><tr>'
        '<th data-key="rank" data-numeric="1"><button type="button">status</button></th>'
        '<th data-key="id"><button type="button">id</button></th>'
        '<th data-key="name"><button type="button">name</button></th>'
        '<th class="num" data-key="attempts" data-numeric="1">'
        '<button type="button">attempts</button></th>'
        "<th>last reply</th>"
        '<th data-key="time"><button type="button">last event</button></th>'
        "</tr></thead>\n<tbody>\n"
    )
    for order, record in enumerate(data.recipients):
        yield _table_row(order, record)
    yield "</tbody></table>\n"
    for record in data.recipients:
        yield _block(record)
    yield "</section>\n"


def _gone(data: ReportData) -> str:
    if not data.gone_total:
        return ""
    parts = [
        '<section id="gone">\n<h2>No longer in the campaign file</h2>\n'
        f"<p>The log holds letters to {data.gone_total} recipient id(s) the campaign file no"
        " longer has (renamed, or taken out); they are not counted above.</p>\n"
    ]
    if len(data.gone) < data.gone_total:
        parts.append(
            f"<p>The first {len(data.gone)} are shown; <code>campaign log --history ID</code>"
            " shows any of them.</p>\n"
        )
    parts += [_block(record) for record in data.gone]
    parts.append("</section>\n")
    return "".join(parts)


def _status_rank(status: str) -> int:
    return _STATUS_ORDER.index(status) if status in _STATUS_ORDER else len(_STATUS_ORDER)


def _table_row(order: int, record: RecipientRecord) -> str:
    name = record.name + (f" ({record.organisation})" if record.organisation else "")
    return (
        f'<tr data-order="{order}" data-block="r-{esc(record.id)}"'
        f' data-status="{esc(record.status)}"'
        f' data-rank="{_status_rank(record.status)}" data-id="{esc(record.id)}"'
        f' data-name="{esc(record.name.lower())}" data-attempts="{record.attempts}"'
        f' data-time="{esc(record.last_event)}">'
        f"<td>{_badge(record.status)}</td>"
        f'<td><a href="#r-{esc(record.id)}">{esc(record.id)}</a></td>'
        f"<td>{esc(name)}</td>"
        f'<td class="num">{record.attempts}</td>'
        f'<td class="reply">{_reply(record.last_code, _shorten(record.last_reply, 200))}</td>'
        f"<td>{_time(record.last_event)}</td></tr>\n"
    )


def _block(record: RecipientRecord) -> str:
    parts = [
        f'<article class="recipient st-{_slug(record.status)}" id="r-{esc(record.id)}"'
        f' data-status="{esc(record.status)}">\n'
        f"<h3>{_badge(record.status)} {esc(record.name)}"
        f' <span class="rid">{esc(record.id)}</span></h3>\n'
    ]
    if record.organisation:
        parts.append(f'<p class="org">{esc(record.organisation)}</p>\n')
    parts.append(
        '<table class="addresses"><colgroup><col class="c-address"><col class="c-outcome">'
        '<col class="c-reply"><col class="c-queue"><col class="c-when"></colgroup>'
        "<thead><tr><th>address</th><th>outcome</th>"
        "<th>server reply</th><th>queue id</th><th>answered</th></tr></thead><tbody>\n"
    )
    for address in record.addresses:
        parts.append(
            f"<tr><td><code>{esc(address.address)}</code></td><td>{_badge(address.outcome)}</td>"
            f'<td class="reply">{_reply(address.code, address.reply)}</td>'
            f"<td>{f'<code>{esc(address.queue_id)}</code>' if address.queue_id else '—'}</td>"
            f"<td>{_time(address.time)}</td></tr>\n"
        )
    parts.append('</tbody></table>\n<dl class="proof">\n')
    parts.append(f"<dt>attempts</dt><dd>{record.attempts}</dd>\n")
    accepted_at = (
        _time(record.accepted_at)
        if record.accepted_at or record.resolved is None
        else "— (settled by hand: no server's acceptance was logged)"
    )
    parts.append(f"<dt>accepted at</dt><dd>{accepted_at}</dd>\n")
    if record.queue_id:
        parts.append(f"<dt>queue id</dt><dd><code>{esc(record.queue_id)}</code></dd>\n")
    # The archive keeps every letter that went out: accepted, or sent with its answer lost
    # (unknown, or settled as sent by a person after checking the server's log).
    lost = record.status == "unknown" or record.resolved is not None
    label = "SHA-256 of the bytes sent, answer lost" if lost else "SHA-256 of the bytes accepted"
    parts.append(
        f"<dt>Message-ID</dt><dd>{_code_or_dash(record.message_id)}</dd>\n"
        f"<dt>{label}</dt><dd>{_code_or_dash(record.sha256, 'sha')}"
    )
    if record.archive is not None:
        check = record.archive_check
        parts.append(f' <span class="badge b-{_slug(check)}">{esc(_CHECK_TEXT[check])}</span>')
        if record.archive_sha256:
            parts.append(f"<br>the file's SHA-256: <code>{esc(record.archive_sha256)}</code>")
    parts.append(f"</dd>\n<dt>archived as</dt><dd>{_code_or_dash(record.archive)}</dd>\n")
    if record.sent_sha256:
        parts.append(
            "<dt>SHA-256 of the bytes sent, answer lost</dt>"
            f"<dd>{_code_or_dash(record.sent_sha256, 'sha')} (the server may hold them; not"
            " archived, as no acceptance was logged)</dd>\n"
        )
    parts.append(f"<dt>last event</dt><dd>{_time(record.last_event)}</dd>\n")
    if record.resolved:
        parts.append(f'<dt>resolved by hand</dt><dd class="reply">{esc(record.resolved)}</dd>\n')
    if record.replies or record.auto_replies:
        parts.append(
            f"<dt>answers</dt><dd>{record.replies} from a person,"
            f" {record.auto_replies} automatic; the latest {_time(record.last_answer)}</dd>\n"
        )
    parts.append("</dl>\n</article>\n")
    return "".join(parts)


def _code_or_dash(value: str | None, css: str = "") -> str:
    if not value:
        return "—"
    klass = f' class="{css}"' if css else ""
    return f"<code{klass}>{esc(value)}</code>"


def _collapsed(data: ReportData) -> str:
    if not data.collapsed:
        return ""
    parts = [
        '<section id="collapsed">\n<h2>Not listed one by one</h2>\n'
        f"<p>A page of {data.total} recipient blocks would be too long to open or print; these"
        " are counted here, and <code>campaign log</code> lists each with its reply, Message-ID"
        " and SHA-256. Their letters in <code>sent/</code> are not checked against the log on"
        " this page: <code>sha256sum</code> checks them against the SHA-256 the log"
        " gives.</p>\n<ul>\n"
    ]
    for status, count in data.collapsed:
        parts.append(
            f'<li data-status="{esc(status)}" data-count="{count}">{count} more {esc(status)}:'
            f" <code>campaign log --status {esc(status)} --csv</code></li>\n"
        )
    parts.append("</ul>\n</section>\n")
    return "".join(parts)


def _test_sends(data: ReportData) -> str:
    if not data.test_send_total:
        return ""
    counts = ", ".join(f"{count} {esc(outcome)}" for outcome, count in data.test_counts)
    parts = [
        '<section id="tests">\n<h2>Test sends</h2>\n'
        f"<p>{data.test_send_total} test message(s) went to a test address with"
        f" <code>campaign send --test-to</code> ({counts}). They are not letters to the"
        " recipients and are not counted as sent.</p>\n"
    ]
    if len(data.test_sends) < data.test_send_total:
        parts.append(f"<p>The first {len(data.test_sends)} are listed.</p>\n")
    parts.append(
        '<table class="tests"><colgroup><col class="c-time"><col class="c-of"><col class="c-to">'
        '<col class="c-outcome"><col class="c-test-reply"><col class="c-letter"></colgroup>'
        "<thead><tr><th>time</th><th>letter of</th><th>sent to</th><th>outcome</th>"
        "<th>server reply</th><th>Message-ID, SHA-256 (tests are not archived)</th></tr>"
        "</thead><tbody>\n"
    )
    for test in data.test_sends:
        parts.append(
            f"<tr><td>{_time(test.time)}</td><td>{esc(test.recipient)}</td>"
            f"<td><code>{esc(test.address)}</code></td><td>{_badge(test.outcome)}</td>"
            f'<td class="reply">{_reply(test.code, test.reply)}</td>'
            f"<td>{_code_or_dash(test.message_id)}<br>{_code_or_dash(test.sha256, 'sha')}</td>"
            "</tr>\n"
        )
    parts.append("</tbody></table>\n</section>\n")
    return "".join(parts)


def _notes(data: ReportData) -> str:
    if not data.notes:
        return ""
    items = "".join(f"<li>{esc(note)}</li>\n" for note in data.notes)
    return f'<section id="notes">\n<h2>Notes on the log</h2>\n<ul>\n{items}</ul>\n</section>\n'


def _footer(data: ReportData) -> str:
    return (
        '<footer id="provenance">\n'
        f"<p>Report made {_time(data.made_at)} from the send log"
        f" <code>{esc(data.log_path)}</code> ({data.log_events} events of this campaign,"
        f' {data.log_size} bytes), SHA-256 <code class="sha">{esc(data.log_sha256)}</code>.</p>\n'
        "<p>The log is the record; this page is a view of it. Check that it is the same log:"
        f" <code>sha256sum {esc(data.log_path)}</code>.</p>\n"
        "</footer>\n"
    )
