"""Bounds on what one OTLP request may cost, checked before it is decoded.

A small gzip body can inflate to a body of millions of empty messages (``{}`` in JSON, two
bytes each in protobuf): decoding it takes gigabytes and minutes, although its bytes are
within the size limit. Each message decoded costs about the same memory whatever its
size, so the number of messages is bounded here, at C speed where possible:

- JSON: every object is a ``{``; counting them bounds every level at once.
- Protobuf: first every tag byte of the body is counted with ``bytes.count``: an upper
  bound on every count below, so a body within it passes at once. Otherwise resource
  spans, scope spans and spans are walked (a few per request, and at most ``max_spans``
  spans) and counted; inside each span, the tag bytes of attributes,
  events and links are counted with ``bytes.count``: an upper bound, exact when a tag byte
  appears only as a tag. Only a span whose bound is over the limit is walked field by
  field, and the walk stops at the limit.

Pure: no I/O. A body that is malformed is left to the decoder (a 400 there).
"""

from __future__ import annotations

#: Messages (protobuf) or objects (JSON) one request may hold, spans included.
DEFAULT_MAX_VALUES_PER_REQUEST = 2_000_000
#: gzip members one body may hold (clients send one): more is refused in linear time.
MAX_GZIP_MEMBERS = 64

# protobuf wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# Tag bytes of the messages a span holds: attributes (9), events (11), links (13); the
# attributes of events (3) and links (4), and the values inside arrays and kvlists (1).
_SPAN_TAGS = (b"\x4a", b"\x5a", b"\x6a", b"\x1a", b"\x22", b"\x0a")


class TooMany(Exception):
    """The body holds more than a limit allows: ``what`` names it."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"more than {limit} {what} in one request")
        self.what, self.limit = what, limit


class _Malformed(Exception):
    pass


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise _Malformed
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """(field number, start, end) of each length-delimited field in buf[start:end]."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        wire = key & 7
        if wire == _LEN:
            size, i = _varint(buf, i, end)
            if i + size > end:
                raise _Malformed
            yield key >> 3, i, i + size
            i += size
        elif wire == _VARINT:
            _, i = _varint(buf, i, end)
        elif wire == _I64:
            i += 8
        elif wire == _I32:
            i += 4
        else:
            raise _Malformed


def check_protobuf(body: bytes, *, max_spans: int, max_values: int) -> None:
    """Raise :class:`TooMany` when ``body`` (an ExportTraceServiceRequest) holds more
    spans than ``max_spans`` or more messages than ``max_values``; malformed is let pass."""
    try:
        _check_protobuf(body, max_spans, max_values)
    except _Malformed:
        return  # the decoder refuses it with a 400 that says why


def _check_protobuf(body: bytes, max_spans: int, max_values: int) -> None:
    """Count at C speed with upper bounds; only when the bound is over the limit, count
    exactly (a walk that stops at the limit)."""
    if _within_by_tag_bytes(body, max_spans, max_values):
        return
    exact = False
    while True:
        values = _count(body, max_spans, max_values, exact)
        if values <= max_values:
            return
        if exact:
            raise TooMany("values", max_values)
        exact = True


# Every message _count counts starts with one of these tag bytes, each at its own offset:
# resource spans, resources, scopes and attributes inside them (1), scope spans and spans
# (2), scope attributes (3), and the _SPAN_TAGS.
_ALL_TAGS = (b"\x0a", b"\x12", b"\x1a", b"\x22", b"\x4a", b"\x5a", b"\x6a")


def _within_by_tag_bytes(body: bytes, max_spans: int, max_values: int) -> bool:
    """True when counting the tag bytes of the whole body, at C speed, already proves it
    within every limit: each count bounds what the walk below would count. Any byte equal
    to a tag counts too, so a body of typical size (a few hundred KiB) passes here and
    only a large or crafted one is walked."""
    spans, groups, values = tag_byte_bounds(body)
    return spans <= max_spans and groups <= 3 * max_spans and values <= max_values


def tag_byte_bounds(body: bytes) -> tuple[int, int, int]:
    """Upper bounds on the spans, the groups (resource and scope spans) and the values that
    :func:`check_protobuf` counts in ``body``."""
    count = body.count
    ones, twos = count(b"\x0a"), count(b"\x12")
    return twos, ones + twos, ones + twos + sum(count(tag) for tag in _ALL_TAGS[2:])


def _count(body: bytes, max_spans: int, max_values: int, exact: bool) -> int:
    values = spans = groups = 0
    count = bytes.count
    for field, rs_start, rs_end in _fields(body, 0, len(body)):
        if field != 1:  # resource_spans
            continue
        values += 1
        groups += 1
        if groups > 3 * max_spans:  # a resource spans, a resource and a scope per span
            raise TooMany("resource and scope spans", 3 * max_spans)
        for field2, ss_start, ss_end in _fields(body, rs_start, rs_end):
            values += 1  # the resource or a scope spans
            groups += 1
            if groups > 3 * max_spans:
                raise TooMany("resource and scope spans", 3 * max_spans)
            if field2 == 1:  # the resource: its attributes
                values += (_values(body, ss_start, ss_end, _RESOURCE, max_values) if exact
                           else count(body, b"\x0a", ss_start, ss_end))
                continue
            if field2 != 2:
                continue
            for field3, sp_start, sp_end in _fields(body, ss_start, ss_end):
                if field3 == 1:  # the instrumentation scope and its attributes
                    values += 1 + (_values(body, sp_start, sp_end, _SCOPE, max_values) if exact
                                   else count(body, b"\x1a", sp_start, sp_end))
                    continue
                if field3 != 2:
                    continue
                spans += 1
                if spans > max_spans:
                    raise TooMany("spans", max_spans)
                if exact:
                    values += 1 + _values(body, sp_start, sp_end, _SPAN, max_values - values)
                else:
                    values += 1 + sum(count(body, tag, sp_start, sp_end) for tag in _SPAN_TAGS)
                if exact and values > max_values:
                    return values
    return values


def _values(body: bytes, start: int, end: int, schema: dict, room: int) -> int:
    """The exact number of values inside one message (stops once past ``room``)."""
    counter = [0, room]
    try:
        _walk(body, start, end, schema, counter)
    except _Full:
        pass
    return counter[0]


class _Full(Exception):
    pass


# message schema: field number -> (whether it counts as a value, schema of the message in
# it). An attribute counts once: its AnyValue wrapper is walked into, not counted.
_ANY: dict = {}
_KEY_VALUE = {2: (False, _ANY)}
_ANY.update({5: (False, {1: (True, _ANY)}),  # array_value.values
             6: (False, {1: (True, _KEY_VALUE)})})  # kvlist_value.values
_RESOURCE = {1: (True, _KEY_VALUE)}  # Resource.attributes
_SCOPE = {3: (True, _KEY_VALUE)}  # InstrumentationScope.attributes
_SPAN = {9: (True, _KEY_VALUE), 11: (True, {3: (True, _KEY_VALUE)}),
         13: (True, {4: (True, _KEY_VALUE)})}


def _walk(body: bytes, start: int, end: int, schema: dict, counter: list) -> None:
    for field, s, e in _fields(body, start, end):
        entry = schema.get(field)
        if entry is None:
            continue
        counts, inner = entry
        if counts:
            counter[0] += 1
            if counter[0] > counter[1]:
                raise _Full
        _walk(body, s, e, inner, counter)


def check_json(body: bytes, *, max_values: int) -> None:
    """Raise :class:`TooMany` when a JSON body holds more than ``max_values`` objects (an
    upper bound: a ``{`` inside a string counts too, which no real payload comes near)."""
    if body.count(b"{") > max_values:
        raise TooMany("values", max_values)
