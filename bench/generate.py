"""Generate a benchmark campaign of N recipients, deterministic for a seed.

`generate(n, outdir, seed)` writes, under `outdir`:

* `recipients.yaml` in the project's own format (every scalar a double-quoted
  string; no anchors, tags or bare numbers) and `templates/letter.txt.j2`,
  `templates/letter.html.j2`: a letter of about 4 KB of text, plain plus HTML;
* the same data for the baselines: `recipients.csv` (id, name, email,
  organisation, salutation; `email` is the addresses joined by ", "),
  `campaign.json` (the campaign section), and for mailmerge
  `mailmerge_template.txt` (multipart/alternative, the same letter) and
  `mailmerge_server.conf` (127.0.0.1, no security; the runner rewrites the
  port for every run with `mailmerge_config(port)`);
* `addresses.txt`: every address, one a line (what the sink must see once each);
* with `attachment_kb`, `letter.pdf` of that many KiB, named in `campaign.attachments`
  (every letter carries it): a PDF header, seeded random bytes (as compressed PDF
  streams look) and the end marker.

Names carry non-ASCII letters, some are written "Surname, Given"; each
recipient has one to three addresses, all unique, under example.com,
example.net and example.org only.

    python bench/generate.py 1000 /tmp/bench-n1000 --seed 1
    python bench/generate.py 1000 /tmp/bench-n1000-pdf --attachment-kb 200
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import textwrap
import unicodedata
from dataclasses import dataclass
from pathlib import Path

GIVEN = [
    ("Zoë", "f"),
    ("Jürgen", "m"),
    ("Łukasz", "m"),
    ("Søren", "m"),
    ("François", "m"),
    ("José", "m"),
    ("Chloé", "f"),
    ("Björk", "f"),
    ("Đorđe", "m"),
    ("Małgorzata", "f"),
    ("Ólafur", "m"),
    ("Renée", "f"),
    ("Ines", "f"),
    ("Hélène", "f"),
    ("Ľubomír", "m"),
    ("Şebnem", "f"),
    ("Åsa", "f"),
    ("Thomas", "m"),
    ("Anna", "f"),
    ("Mária", "f"),
    ("Dóra", "f"),
    ("Jiří", "m"),
    ("Nuño", "m"),
    ("Eléonore", "f"),
    ("Göran", "m"),
    ("Aoife", "f"),
    ("Pádraig", "m"),
    ("Ioana", "f"),
    ("Teodora", "f"),
    ("Mikael", "m"),
]
SURNAMES = [
    "Ångström",
    "Müller",
    "Dvořák",
    "Nguyễn",
    "Øberg",
    "Čapek",
    "Çelik",
    "Gómez",
    "Kovač",
    "Straßer",
    "Lefèvre",
    "Wójcik",
    "Jørgensen",
    "Þórsdóttir",
    "Ó Briain",
    "Szabó",
    "Nowak",
    "Papadopoulos",
    "Šimková",
    "Fernández",
    "Grünewald",
    "Håkansson",
    "Smith",
    "O'Connor",
    "Łęcka",
    "Ionescu",
    "Vázquez",
    "Bäcklund",
    "Dubois",
    "Rossi",
]
ORGANISATIONS = [
    "Ministère de la Transition écologique",
    "Bundestag, Ausschuss für Umwelt",
    "Sejm Rzeczypospolitej Polskiej",
    "Folketingets Miljøudvalg",
    "Cortes Generales — Comisión de Transición Ecológica",
    "Riksdagens miljö- och jordbruksutskott",
    "Alþingi",
    "Národní rada Slovenskej republiky",
    "Tweede Kamer der Staten-Generaal",
    "Dáil Éireann",
    "European Parliament, ENVI Committee",
    "Consiglio regionale del Piemonte",
]
DOMAINS = ["example.com", "example.net", "example.org"]
TITLES = {"f": "Ms", "m": "Mr"}

CAMPAIGN = {
    "subject": "Open letter to {{ recipient.name }}",
    # Not a reserved domain: `campaign send` refuses a placeholder sender. The mail goes
    # only to the benchmark's loopback sink.
    "from": "Bench Sender <sender@mep-letter.eu>",
    "template": "letter",
    "place": "Brussels",
    "signed": "The Clean Rivers Coalition — Ærøskøbing chapter",
}

# The letter, once, with neutral placeholders: {{ R.x }} is a recipient field,
# {{ C.x }} a campaign field. Turned into the project's templates and into
# mailmerge's by `_project_template` and `_mailmerge_text`.
PARAGRAPHS = [
    "We write to you, {{ R.name }}, in your capacity at {{ R.organisation }}, on behalf of "
    "people who live along our rivers and who have watched, year after year, the water "
    "change colour, the fish disappear and the banks erode. This is an open letter: it is "
    "sent, in the same words, to every member of the committees that will decide the "
    "matter this season, and it will be published in full.",
    "Our request is simple. Before the end of the session, adopt binding limits on the "
    "discharge of untreated water into rivers and lakes, fund the monitoring that makes "
    "such limits real, and publish the measurements every month, station by station, in "
    "a form that anyone can read. Rules that nobody can check are promises, and we have "
    "had enough promises.",
    "The evidence is not in doubt. Independent laboratories in fourteen regions have "
    "measured nitrate, phosphate and microplastic concentrations well above the levels "
    "that the existing directives already call unacceptable. Where monitoring stations "
    "exist, the numbers rise after every heavy rain; where they do not, nobody measures "
    "at all — and the silence is then read as good news. We enclose nothing, because "
    "every figure we rely on is already public; what is missing is the will to act on it.",
    "The cost of acting is known too. The treatment capacity that is missing was costed "
    "by your own services three years ago, and the sum is smaller than what is spent each "
    "year on cleaning beaches, closing fisheries and buying bottled water for villages "
    "whose wells are no longer safe. Doing nothing is not free: it is paid for later, by "
    "others, with interest.",
    "We know that committee work is slow and that every proposal competes with many "
    "others. That is why we ask for three concrete steps rather than a declaration: a "
    "date for the limits, a budget line for the monitoring, and a public register of the "
    "measurements. Each can be voted on its own; none needs to wait for the others.",
    "Some have told us that the matter belongs to the regions, or to the next legislature, "
    "or to a European body that has not yet been asked. We have asked all of them. Each "
    "answer pointed somewhere else, and in the meantime the water kept flowing downhill, "
    "as it always does, carrying with it whatever was put into it upstream. Responsibility "
    "that is shared by everyone ends up held by no one; we are writing to you precisely "
    "because your committee can end that circle by taking the first step itself.",
    "Nor is this a request to choose between farmers, industry and the people who live "
    "downstream. Many of the farms in our catchments have already cut their run-off at "
    "their own expense, and several plants have installed treatment that goes beyond the "
    "law. They ask for the same thing we do: a clear rule, applied to everyone, measured "
    "the same way everywhere, so that those who do the right thing are not undercut by "
    "those who do not. Clear limits protect the careful as much as they restrain the rest.",
    "We would welcome a meeting with you or your staff in {{ C.place }} at any time in "
    "the coming weeks, and we will gladly send the technical notes that our members "
    "have prepared — on sampling, on treatment costs, and on the experience of the "
    "regions that have already done what we ask. We will also report, openly, how each "
    "member of the committee answered this letter, and we hope to report yours as a yes.",
    "Thank you for reading this far. Rivers do not vote, but the people who drink from "
    "them, fish in them and live beside them do, and they are watching this decision "
    "with more attention than any before it.",
]


@dataclass(frozen=True)
class Generated:
    """Where `generate` put things, and what the sink must see."""

    n: int
    seed: int
    outdir: Path
    yaml_path: Path
    templates_dir: Path
    csv_path: Path
    campaign_json: Path
    mailmerge_template: Path
    mailmerge_config: Path
    addresses_path: Path
    address_count: int
    attachment: Path | None = None  # the file every letter carries, when asked for

    def addresses(self) -> list[str]:
        return self.addresses_path.read_text("utf-8").split()


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid ones)."""
    return json.dumps(value, ensure_ascii=False)


def _ascii_slug(text: str) -> str:
    special = {
        "ø": "o",
        "Ø": "o",
        "ł": "l",
        "Ł": "l",
        "ß": "ss",
        "đ": "d",
        "Đ": "d",
        "þ": "th",
        "Þ": "th",
        "æ": "ae",
        "Æ": "ae",
        "ð": "d",
    }
    text = "".join(special.get(ch, ch) for ch in text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in text.lower() if ch.isalnum()) or "x"


def _project_template(text: str) -> str:
    return text.replace("{{ R.", "{{ recipient.").replace("{{ C.", "{{ campaign.")


def _mailmerge_text(text: str) -> str:
    for key in ("place", "signed"):
        text = text.replace("{{ C." + key + " }}", CAMPAIGN[key])
    return text.replace("{{ R.", "{{ ")


def _wrap(paragraph: str, width: int = 72) -> str:
    """Wrap at `width` columns, never inside a {{ ... }} placeholder."""
    protected = re.sub(r"\{\{.*?\}\}", lambda m: m.group(0).replace(" ", "\0"), paragraph)
    lines = textwrap.wrap(protected, width, break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines).replace("\0", " ")


def _letter_txt() -> str:
    body = "\n\n".join(_wrap(p) for p in PARAGRAPHS)
    return (
        "{{ R.salutation }}\n\n" + body + "\n\nYours sincerely,\n\n{{ C.signed }}\n{{ C.place }}\n"
    )


def _letter_html() -> str:
    paras = "\n".join(f"<p>{_wrap(p)}</p>" for p in PARAGRAPHS)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        "<title>Open letter</title></head>\n"
        '<body style="font-family: Georgia, serif; max-width: 40em">\n'
        "<p>{{ R.salutation }}</p>\n" + paras + "\n"
        "<p>Yours sincerely,</p>\n<p><strong>{{ C.signed }}</strong><br>{{ C.place }}</p>\n"
        "</body>\n</html>\n"
    )


def mailmerge_config(port: int, host: str = "127.0.0.1") -> str:
    """mailmerge's server config: no `security` line means a plain, unauthenticated session."""
    return (
        "# Written by bench/generate.py; bench/run.py rewrites the port for each run.\n"
        "[smtp_server]\n"
        f"host = {host}\n"
        f"port = {port}\n"
        "ratelimit = 0\n"
    )


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    emails: list[str]
    organisation: str
    salutation: str


def _recipients(n: int, seed: int) -> list[Person]:
    rng = random.Random(seed)
    out: list[Person] = []
    for i in range(1, n + 1):
        given, sex = rng.choice(GIVEN)
        surname = rng.choice(SURNAMES)
        title = rng.choice([TITLES[sex], TITLES[sex], "Dr"])
        name = f"{surname}, {given}" if rng.random() < 0.1 else f"{given} {surname}"
        g, s = _ascii_slug(given), _ascii_slug(surname)
        k = rng.choices([1, 2, 3], weights=[60, 30, 10])[0]
        locals_ = [f"{g}.{s}-{i:06d}", f"office-{i:06d}", f"{g[0]}.{s}-{i:06d}"]
        domains = rng.sample(DOMAINS, 3)
        emails = [f"{locals_[j]}@{domains[j]}" for j in range(k)]
        out.append(
            Person(
                id=f"r{i:06d}",
                name=name,
                emails=emails,
                organisation=rng.choice(ORGANISATIONS),
                salutation=f"Dear {title} {surname},",
            )
        )
    return out


ATTACHMENT_NAME = "letter.pdf"


def pdf_bytes(size: int, seed: int) -> bytes:
    """`size` bytes that look like a PDF to a MIME type guess and a reader's first glance."""
    head, tail = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", b"\n%%EOF\n"
    middle = max(size - len(head) - len(tail), 0)
    return head + random.Random(seed).randbytes(middle) + tail


def generate(n: int, outdir: Path | str, seed: int = 1, *, attachment_kb: int = 0) -> Generated:
    """Write a campaign of `n` recipients under `outdir` (created); same seed, same bytes.

    `attachment_kb`: attach a PDF of that many KiB to every letter (campaign-wide).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    outdir = Path(outdir)
    templates = outdir / "templates"
    templates.mkdir(parents=True, exist_ok=True)
    people = _recipients(n, seed)

    campaign = {"id": f"bench-n{n}", **CAMPAIGN}
    lines = ["# Generated by bench/generate.py; do not edit.", "campaign:"]
    lines += [f"  {key}: {_q(value)}" for key, value in campaign.items()]
    attachment = None
    if attachment_kb:
        attachment = outdir / ATTACHMENT_NAME
        attachment.write_bytes(pdf_bytes(attachment_kb * 1024, seed))
        lines.append(f"  attachments: [{_q(ATTACHMENT_NAME)}]")
    lines.append("recipients:")
    for p in people:
        emails = ", ".join(_q(e) for e in p.emails)
        lines.append(f"  - id: {_q(p.id)}")
        lines.append(f"    name: {_q(p.name)}")
        lines.append(f"    emails: [{emails}]")
        lines.append(f"    organisation: {_q(p.organisation)}")
        lines.append(f"    salutation: {_q(p.salutation)}")
    yaml_path = outdir / "recipients.yaml"
    yaml_path.write_text("\n".join(lines) + "\n", "utf-8")

    (templates / "letter.txt.j2").write_text(_project_template(_letter_txt()), "utf-8")
    (templates / "letter.html.j2").write_text(_project_template(_letter_html()), "utf-8")

    csv_path = outdir / "recipients.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
        writer.writerow(["id", "name", "email", "organisation", "salutation"])
        for p in people:
            writer.writerow([p.id, p.name, ", ".join(p.emails), p.organisation, p.salutation])
    campaign_json = outdir / "campaign.json"
    campaign_json.write_text(json.dumps(campaign, ensure_ascii=False, indent=2) + "\n", "utf-8")

    boundary = "==bench-letter-boundary=="
    mm = (
        "TO: {{ email }}\n"
        f"FROM: {CAMPAIGN['from']}\n"
        "SUBJECT: Open letter to {{ name }}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
        + _mailmerge_text(_letter_txt())
        + f"\n--{boundary}\n"
        "Content-Type: text/html; charset=utf-8\n\n"
        + _mailmerge_text(_letter_html())
        + f"\n--{boundary}--\n"
    )
    mm_template = outdir / "mailmerge_template.txt"
    mm_template.write_text(mm, "utf-8")
    mm_config = outdir / "mailmerge_server.conf"
    mm_config.write_text(mailmerge_config(2525), "utf-8")

    addresses = [e for p in people for e in p.emails]
    addresses_path = outdir / "addresses.txt"
    addresses_path.write_text("\n".join(addresses) + "\n", "utf-8")
    return Generated(
        n=n,
        seed=seed,
        outdir=outdir,
        yaml_path=yaml_path,
        templates_dir=templates,
        csv_path=csv_path,
        campaign_json=campaign_json,
        mailmerge_template=mm_template,
        mailmerge_config=mm_config,
        addresses_path=addresses_path,
        address_count=len(addresses),
        attachment=attachment,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="generate a benchmark campaign")
    p.add_argument("n", type=int)
    p.add_argument("outdir")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--attachment-kb", type=int, default=0, help="a PDF on every letter (KiB)")
    args = p.parse_args(argv)
    g = generate(args.n, args.outdir, args.seed, attachment_kb=args.attachment_kb)
    attached = f", {g.attachment.name} on every letter" if g.attachment else ""
    print(f"{g.n} recipients, {g.address_count} addresses{attached} -> {g.yaml_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
