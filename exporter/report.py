"""The monthly report: one tenant's calendar month, per model, agent, workflow and member.

Read from a state directory (``serve``'s ledger) while the service runs, read-only: SQLite
through a ``mode=ro`` URI (WAL: readers never block the writer), never the writer's
``<state_dir>/lock``. The ``period_usage`` rows and ``journal_state.seq`` (the last
journal frame SQLite holds) are read in one read transaction; then the period rows of the
journal frames past that seq are added, so calls acknowledged since the last checkpoint
count too. A checkpoint between the two reads deletes the journal files it took: a gap
in the frames after the seq, a file gone while it is read, or a seq that moved past the
frames read, and the whole read starts again (a few times at most). A torn last frame is
the writer in the middle of an append (never acknowledged): the read stops there.

The month is the tenant's calendar month in its timezone: rows are bucketed that way as
they are counted (period ``YYYY-MM``, :mod:`otel_processor.periods`), so the report reads
them as they are. Costs are exact (integer pico-USD, shown as exact decimal strings).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import re
import sqlite3
import time
import urllib.parse
from decimal import ROUND_HALF_EVEN, Decimal

from exporter.journal import Journal, JournalError
from exporter.store import FILENAME
from otel_processor.metrics import OVERFLOW
from otel_processor.periods import AGENT, MEMBER, MODEL, TENANT, WORKFLOW, add_amounts
from otel_processor.prices import PICO_PER_USD

#: The report's sections, in order: (key in the report, period scope, heading).
SECTIONS = (("models", MODEL, "model"), ("agents", AGENT, "agent"),
            ("workflows", WORKFLOW, "workflow"), ("members", MEMBER, "member"))
FORMATS = ("table", "csv", "json")
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
OVERFLOW_NAME = "(ids past the series cap)"
#: Reads started again at most this many times when checkpoints keep moving under them.
MAX_ATTEMPTS = 20
_LOW = 2**62  # period_usage cost = cost_high * 2**62 + cost_low
_READ_ROWS = (
    "SELECT scope, id, input, output, cost_high, cost_low, unpriced, calls"
    " FROM period_usage WHERE tenant = ? AND period = ?"
)


class ReportError(Exception):
    """The state directory cannot be read; the message is one line naming it."""


class _Retry(Exception):
    """A checkpoint moved under the read: read everything again."""


def check_month(text: str) -> str:
    """``YYYY-MM`` with a month 01-12, or ValueError."""
    if not MONTH.fullmatch(text):
        raise ValueError(f"month {text!r} is not YYYY-MM (e.g. 2026-11)")
    return text


# -- reading ----------------------------------------------------------------------------------


def read_month(state_dir: str | os.PathLike, tenant: str, month: str) -> dict:
    """The period rows of ``tenant``'s ``month``, summed by (scope, id), exact as of the
    last journal frame read.

    Returns ``{"rows": {(scope, id): [input, output, cost_pico, unpriced, calls]},
    "checkpoint_seq": the frame SQLite held, "last_frame": the last frame read (the seq
    when none is past it), "journal_frames": frames read past the checkpoint,
    "attempts": reads it took}``. Raises :class:`ReportError`.
    """
    check_month(month)
    state = pathlib.Path(state_dir)
    path = state / FILENAME
    if not path.is_file():
        raise ReportError(f"{state}: no ledger here ({FILENAME} not found): not a state "
                          "directory of `serve`")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: cannot open the ledger read-only: {exc}") from exc
    journal = Journal(state, (), sync=False)  # reading only: its constructor opens nothing
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                result = _read_once(db, journal, tenant, month)
            except _Retry:
                time.sleep(min(0.01 * attempt, 0.2))
                continue
            result["attempts"] = attempt
            return result
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: cannot read the ledger: {exc}") from exc
    finally:
        db.close()
    raise ReportError(f"{state}: checkpoints kept moving under the read ({MAX_ATTEMPTS} "
                      "tries); try again")


def _read_once(db: sqlite3.Connection, journal: Journal, tenant: str, month: str) -> dict:
    db.execute("BEGIN")  # one snapshot: the rows and the seq they hold
    try:
        (seq,) = db.execute("SELECT seq FROM journal_state").fetchone()
        rows: dict[tuple[str, str], list[int]] = {}
        for scope, id_, tin, tout, high, low, unpriced, calls in db.execute(
                _READ_ROWS, (tenant, month)):
            add_amounts(rows, (scope, id_), (tin, tout, high * _LOW + low, unpriced, calls))
    finally:
        db.execute("COMMIT")
    last, frames = seq, 0
    try:
        for frame_seq, _, frame in journal.read():
            if frame_seq <= last:
                continue  # checkpointed already (or a copy the replay would skip too)
            if frame_seq != last + 1:
                raise _Retry  # the frames between went with a checkpoint's rotation
            last, frames = frame_seq, frames + 1
            if len(frame) > 7:  # a frame of an older version holds no period rows
                for row in frame[7]:
                    if row[0] == tenant and row[1] == month:
                        add_amounts(rows, (row[2], row[3]), row[4:])
    except JournalError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise _Retry from None  # deleted by a checkpoint while listed
        raise ReportError(str(exc)) from None
    (now_seq,) = db.execute("SELECT seq FROM journal_state").fetchone()
    if now_seq > last:
        # a checkpoint took frames past those read: they may have been there all along
        raise _Retry
    return {"rows": rows, "checkpoint_seq": seq, "last_frame": last, "journal_frames": frames}


# -- the report -------------------------------------------------------------------------------


def usd(pico: int) -> str:
    """Exact USD of an amount of pico-USD, as a decimal string ("0.0075", "12", "0")."""
    return format((Decimal(pico) / PICO_PER_USD).normalize(), "f")


def _line(id_: str, name: str, amounts) -> dict:
    tin, tout, cost, unpriced, calls = amounts
    return {"id": id_, "name": name, "input_tokens": tin, "output_tokens": tout,
            "total_tokens": tin + tout, "calls": calls, "cost_pico": cost,
            "cost_usd": usd(cost), "unpriced_tokens": unpriced}


def _name(directory, tenant: str, scope: str, id_: str) -> str:
    if id_ == OVERFLOW:
        return OVERFLOW_NAME
    if directory is None:
        return id_
    if scope == MEMBER:
        member = directory.member(tenant, id_)
        return member.name if member is not None else id_
    if scope == AGENT:
        entry = directory.agents.get(id_)
    elif scope == WORKFLOW:
        entry = directory.workflows.get(id_)
    elif scope == TENANT:
        entry = directory.tenants.get(id_)
    else:  # a model's name is its id
        return id_
    return entry.name if entry is not None else id_


def monthly_report(state_dir: str | os.PathLike, tenant: str, month: str, *,
                   directory=None, timezone: str | None = None) -> dict:
    """The report of ``tenant``'s ``month`` from ``state_dir``, as plain data (what
    ``--format json`` prints).

    ``directory`` (an :class:`otel_processor.directory.Directory`, or None: names are the
    ids) names the tenant, members, agents and workflows. ``timezone`` is only shown.
    ``{"tenant", "tenant_name", "month", "timezone", "total": line, "models": [line],
    "agents", "workflows", "members", "notes": [str], "as_of": {...}}``; a line is
    ``{"id", "name", "input_tokens", "output_tokens", "total_tokens", "calls",
    "cost_pico", "cost_usd" (exact decimal string), "unpriced_tokens"}``, largest cost
    first (then tokens, then id). Raises :class:`ReportError`.
    """
    read = read_month(state_dir, tenant, month)
    rows = read["rows"]
    report = {"tenant": tenant, "tenant_name": _name(directory, tenant, TENANT, tenant),
              "month": month, "timezone": timezone,
              "total": _line(tenant, _name(directory, tenant, TENANT, tenant),
                             rows.get((TENANT, tenant), (0, 0, 0, 0, 0)))}
    for key, scope, _ in SECTIONS:
        lines = [_line(id_, _name(directory, tenant, scope, id_), amounts)
                 for (s, id_), amounts in rows.items() if s == scope]
        lines.sort(key=lambda line: (-line["cost_pico"], -line["total_tokens"], line["id"]))
        report[key] = lines
    notes = []
    if directory is not None and tenant not in directory.tenants:
        notes.append(f"tenant {tenant!r} is not in the directory")
    if not rows:
        notes.append(f"no usage of tenant {tenant!r} in {month} in this ledger")
    if any(line["id"] == OVERFLOW for key, _, _ in SECTIONS for line in report[key]):
        notes.append(f"{OVERFLOW}: ids past max_series_per_metric, counted together")
    if report["total"]["unpriced_tokens"]:
        notes.append("unpriced tokens have no price in the catalog: the cost is partial")
    report["notes"] = notes
    report["as_of"] = {key: read[key] for key in
                       ("checkpoint_seq", "last_frame", "journal_frames")}
    return report


# -- formats ----------------------------------------------------------------------------------

_COLUMNS = ("input_tokens", "output_tokens", "total_tokens", "calls", "cost_usd",
            "unpriced_tokens")
_HEADINGS = ("input", "output", "total", "calls", "cost USD", "unpriced")


def _rounded(pico: int, places: int = 6) -> str:
    exact = Decimal(pico) / PICO_PER_USD
    return format(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN), "f")


def format_table(report: dict) -> str:
    """Aligned text for a terminal: costs rounded to 6 decimals (csv and json are exact)."""
    zone = f" ({report['timezone']})" if report.get("timezone") else ""
    out = [f"{report['tenant']} ({report['tenant_name']}), {report['month']}{zone}"]
    blocks = [(heading, report[key]) for key, _, heading in SECTIONS]
    blocks.append(("tenant total", [report["total"]]))
    cells = []
    for heading, lines in blocks:
        cells.append([(heading, "name", *_HEADINGS)])
        for line in lines:
            cost = _rounded(line["cost_pico"])
            cells[-1].append((line["id"], line["name"],
                              *(cost if c == "cost_usd" else str(line[c]) for c in _COLUMNS)))
    widths = [max(len(row[i]) for block in cells for row in block) for i in range(8)]
    for block in cells:
        out.append("")
        for row in block:
            text = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            text += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
            out.append("  ".join(text).rstrip())
        if len(block) == 1:
            out.append("(none)")
    for note in report["notes"]:
        out.append(f"note: {note}")
    return "\n".join(out) + "\n"


def format_csv(report: dict) -> str:
    """One row per line of every section, ``section`` first (``total`` for the tenant's
    total); costs as exact decimal strings."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("tenant", "month", "section", "id", "name", *_COLUMNS))
    sections = [(heading, report[key]) for key, _, heading in SECTIONS]
    for section, lines in [*sections, ("total", [report["total"]])]:
        for line in lines:
            writer.writerow((report["tenant"], report["month"], section, line["id"],
                             line["name"], *(line[c] for c in _COLUMNS)))
    return buffer.getvalue()


def format_json(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


FORMATTERS = {"table": format_table, "csv": format_csv, "json": format_json}
