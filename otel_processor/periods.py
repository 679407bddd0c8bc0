"""Calendar periods: each tenant's exact usage per local day and month, and budgets on it.

Every attributed model call (a :class:`~otel_processor.attribution.UsageEvent`) is also
counted in the periods of its time, in its billing tenant's timezone: the tenant's day and
month, and the month of its member, outermost agent, outermost workflow and model. A
*row* is ``(tenant, period, scope, id)`` with five amounts: input tokens, output tokens,
cost in pico-USD, unpriced tokens and calls. ``period`` is ``YYYY-MM-DD`` (scope
``tenant`` only) or ``YYYY-MM``.

A call counts in the period of its span's end time; a time more than
:data:`MAX_FUTURE_SECONDS` ahead of the runtime's clock, or more than
:data:`MAX_LATE_SECONDS` behind it, counts at the time it is attributed instead (a wrong
client clock cannot open periods years away).

The runtimes keep :class:`Periods`, the rows of each tenant's recent periods (today,
yesterday, this and last month), in memory; the service's store keeps every row for
the monthly report. Rows go plan -> (commit) -> apply, as the ledger's increments do.
No I/O here; the clock is the caller's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from otel_processor.attribution import UsageEvent
from otel_processor.metrics import OVERFLOW

TENANT, MEMBER, AGENT, WORKFLOW, MODEL = "tenant", "member", "agent", "workflow", "model"
SCOPES = (TENANT, MEMBER, AGENT, WORKFLOW, MODEL)
#: positions of a row's amounts
INPUT, OUTPUT, COST, UNPRICED, CALLS = range(5)
N_AMOUNTS = 5

TODAY, YESTERDAY, MONTH, LAST_MONTH = "today", "yesterday", "month", "last_month"
PERIOD_NAMES = (TODAY, YESTERDAY, MONTH, LAST_MONTH)

MAX_FUTURE_SECONDS = 300.0
MAX_LATE_SECONDS = 62 * 86400.0

#: Distinct ids per scope held in memory before further ones fold into ``__overflow__``
#: (the ledger's series cap, for the same reason).
DEFAULT_MAX_IDS_PER_SCOPE = 20_000

RowKey = tuple[str, str, str, str]  # (tenant, period, scope, id)
Row = tuple[str, str, str, str, int, int, int, int, int]  # key + amounts


class CalendarError(ValueError):
    """A timezone that is not an IANA name this machine knows."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise CalendarError(f"unknown timezone {name!r} (an IANA name such as "
                            "'Asia/Shanghai' or 'UTC')") from exc


class _Day:
    """One local day of one zone: [start, end) in unix seconds, and its period names."""

    __slots__ = ("start", "end", "day", "month")

    def __init__(self, tz: ZoneInfo, d: date) -> None:
        self.start = _midnight(tz, d)
        self.end = _midnight(tz, d + timedelta(days=1))
        self.day = d.isoformat()
        self.month = self.day[:7]


def _midnight(tz: ZoneInfo, d: date) -> float:
    """The first instant of local day ``d``. A midnight that a DST change skips resolves
    (fold 0) to the transition itself, the first instant the day has."""
    return datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


class Calendar:
    """Each tenant's timezone (``default`` for the others), and the periods of a time."""

    def __init__(self, timezones: Mapping[str, str] | None = None, default: str = "UTC"):
        self.default_name = default
        self._default = zone(default)
        self._zones = {tenant: zone(name) for tenant, name in (timezones or {}).items()}
        self.names = {tenant: name for tenant, name in (timezones or {}).items()}
        self._days: dict[str, _Day] = {}  # tenant -> the day last asked for (a cache)
        self._bounds: dict[str, dict] = {}  # tenant -> bounds of the day last asked for

    def zone_of(self, tenant: str) -> ZoneInfo:
        return self._zones.get(tenant, self._default)

    def timezone_name(self, tenant: str) -> str:
        return self.names.get(tenant, self.default_name)

    def day_of(self, tenant: str, seconds: float) -> _Day:
        cached = self._days.get(tenant)
        if cached is not None and cached.start <= seconds < cached.end:
            return cached
        tz = self.zone_of(tenant)
        local = datetime.fromtimestamp(seconds, timezone.utc).astimezone(tz).date()
        day = _Day(tz, local)
        if len(self._days) >= 4096:
            self._days.clear()
        self._days[tenant] = day  # dict set is atomic: shared by writer and scrapes
        return day

    def bounds(self, tenant: str, now: float) -> dict[str, tuple[str, float, float]]:
        """today, yesterday, month, last_month of ``tenant`` at ``now``: (period name as
        stored, start, end) in unix seconds. Cached for the day (do not change the result)."""
        cached = self._bounds.get(tenant)
        if cached is not None and cached[TODAY][1] <= now < cached[TODAY][2]:
            return cached
        tz = self.zone_of(tenant)
        today = datetime.fromtimestamp(now, timezone.utc).astimezone(tz).date()
        yesterday = today - timedelta(days=1)
        month = _month_start(today)
        last = _month_start(month - timedelta(days=1))
        bounds = {
            TODAY: (today.isoformat(), _midnight(tz, today),
                    _midnight(tz, today + timedelta(days=1))),
            YESTERDAY: (yesterday.isoformat(), _midnight(tz, yesterday), _midnight(tz, today)),
            MONTH: (month.isoformat()[:7], _midnight(tz, month),
                    _midnight(tz, _next_month(month))),
            LAST_MONTH: (last.isoformat()[:7], _midnight(tz, last), _midnight(tz, month)),
        }
        if len(self._bounds) >= 4096:
            self._bounds.clear()
        self._bounds[tenant] = bounds  # dict set is atomic: writer, scrapes and the API
        return bounds


def counted_at(end_ns: int | None, now: float) -> float:
    """The time a call counts at: its end, unless that is missing or implausible."""
    if end_ns is None:
        return now
    at = end_ns / 1e9
    if now - MAX_LATE_SECONDS <= at <= now + MAX_FUTURE_SECONDS:
        return at
    return now


class PeriodSink:
    """Collects the calls of one group (the runtime's writer): summed by label combination
    as they come, expanded into rows once, by :attr:`rows`."""

    __slots__ = ("calendar", "now", "_calls")

    def __init__(self, calendar: Calendar, now: float) -> None:
        self.calendar = calendar
        self.now = now  # wall-clock seconds
        # (tenant, day, month, caller, agent, workflow, model) -> amounts
        self._calls: dict[tuple, list[int]] = {}

    def add(self, event: UsageEvent, end_ns: int | None) -> None:
        tenant = event.tenant
        day = self.calendar.day_of(tenant, counted_at(end_ns, self.now))
        combination = (tenant, day.day, day.month, event.caller, event.agent, event.workflow,
                       event.model)
        tin, tout, cost = event.input_tokens, event.output_tokens, event.cost_pico
        row = self._calls.get(combination)
        if row is None:
            self._calls[combination] = ([tin, tout, 0, tin + tout, 1] if cost is None
                                        else [tin, tout, cost, 0, 1])
        else:
            row[INPUT] += tin
            row[OUTPUT] += tout
            if cost is None:
                row[UNPRICED] += tin + tout
            else:
                row[COST] += cost
            row[CALLS] += 1

    @property
    def rows(self) -> dict[RowKey, list[int]]:
        """The group's rows, summed by key (built on each access: read it once)."""
        out: dict[RowKey, list[int]] = {}
        get = out.get
        for combination, (a0, a1, a2, a3, a4) in self._calls.items():
            for key in _keys(*combination):  # add_amounts, inlined: about 5 rows per call
                row = get(key)
                if row is None:
                    out[key] = [a0, a1, a2, a3, a4]
                else:
                    row[0] += a0
                    row[1] += a1
                    row[2] += a2
                    row[3] += a3
                    row[4] += a4
        return out


def add_amounts(rows: dict, key: tuple, amounts) -> None:
    """``rows[key] += amounts``, element-wise (a new row is a copy)."""
    row = rows.get(key)
    if row is None:
        rows[key] = list(amounts)
    else:
        for i, amount in enumerate(amounts):
            row[i] += amount


#: (tenant, day, month, caller, agent, workflow, model) -> the call's row keys; cleared when
#: full (dict get, set and clear are atomic under the GIL; a lost entry is built again)
_KEYS: dict[tuple, tuple[RowKey, ...]] = {}


def _keys(tenant, day, month, caller, agent, workflow, model) -> tuple[RowKey, ...]:
    combination = (tenant, day, month, caller, agent, workflow, model)
    keys = _KEYS.get(combination)
    if keys is None:
        keys = [(tenant, day, TENANT, tenant), (tenant, month, TENANT, tenant),
                (tenant, month, MEMBER, caller), (tenant, month, MODEL, model)]
        if agent is not None:
            keys.append((tenant, month, AGENT, agent))
        if workflow is not None:
            keys.append((tenant, month, WORKFLOW, workflow))
        keys = tuple(keys)
        if len(_KEYS) >= 8192:
            _KEYS.clear()
        _KEYS[combination] = keys
    return keys


_ZERO = (0,) * N_AMOUNTS


class Periods:
    """The rows of recent periods, in memory; thread-safe.

    Holds the periods :meth:`prune` keeps (each tenant's yesterday and today, last and this
    month, at the runtime's clock) and whatever newer rows arrive. One writer plans and
    applies; scrapes and the budget API read.
    """

    def __init__(self, calendar: Calendar, *,
                 max_ids_per_scope: int = DEFAULT_MAX_IDS_PER_SCOPE,
                 never_fold: Iterable[tuple[str, str, str]] = ()) -> None:
        """``never_fold``: (tenant, scope, id) kept past the cap (those with a budget)."""
        if max_ids_per_scope < 1:
            raise ValueError(f"max_ids_per_scope must be >= 1, got {max_ids_per_scope}")
        self.calendar = calendar
        self._max_ids = max_ids_per_scope
        self._never_fold = frozenset(never_fold)
        self._lock = threading.Lock()
        self._rows: dict[RowKey, list[int]] = {}  # guarded by _lock
        self._ids: dict[str, int] = dict.fromkeys(SCOPES, 0)  # keys held per scope

    def plan(self, rows: Mapping[RowKey, list[int]]) -> list[Row]:
        """``rows`` as final rows, ids past the cap folded into ``__overflow__``."""
        out: dict[RowKey, list[int]] = {}
        with self._lock:
            held = self._rows
            ids = dict(self._ids)
            for key, amounts in rows.items():
                if key not in held and key not in out:
                    scope = key[2]
                    if (scope != TENANT and ids[scope] >= self._max_ids
                            and (key[0], scope, key[3]) not in self._never_fold):
                        key = (key[0], key[1], scope, OVERFLOW)
                        if key not in held and key not in out:
                            ids[scope] += 1
                    else:
                        ids[scope] += 1
                add_amounts(out, key, amounts)
        return [(*key, *amounts) for key, amounts in out.items()]

    def apply(self, rows: Iterable[Row]) -> None:
        with self._lock:
            held = self._rows
            for row in rows:
                key = row[:4]
                if key not in held:
                    self._ids[key[2]] += 1
                add_amounts(held, key, row[4:])

    load = apply  # rows read back at start: the same addition

    def prune(self, now: float) -> None:
        """Forget rows older than each tenant's yesterday (days) and last month (months)."""
        with self._lock:
            keep: dict[str, tuple[str, str]] = {}
            drop = []
            for key in self._rows:
                tenant, period = key[0], key[1]
                limits = keep.get(tenant)
                if limits is None:
                    b = self.calendar.bounds(tenant, now)
                    limits = keep[tenant] = (b[YESTERDAY][0], b[LAST_MONTH][0])
                if period < (limits[0] if len(period) == 10 else limits[1]):
                    drop.append(key)
            for key in drop:
                del self._rows[key]
                self._ids[key[2]] -= 1

    def amounts(self, tenant: str, period: str, scope: str, id_: str) -> tuple[int, ...]:
        with self._lock:
            row = self._rows.get((tenant, period, scope, id_))
            return tuple(row) if row is not None else _ZERO

    def tenants(self) -> set[str]:
        with self._lock:
            return {key[0] for key in self._rows}

    def snapshot(self) -> dict[RowKey, tuple[int, ...]]:
        with self._lock:
            return {key: tuple(row) for key, row in self._rows.items()}

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


def earliest_kept(now: float) -> str:
    """A period name older than what :meth:`Periods.prune` keeps for any tenant at ``now``
    (what a restart reads back): the month of ``now`` minus 40 days, in UTC."""
    return datetime.fromtimestamp(now - 40 * 86400, timezone.utc).strftime("%Y-%m")
