"""Which span ids are certainly new: two generations of Bloom filters over the dedupe window.

A Bloom filter answers "maybe seen" or "certainly not seen". The store asks it before it
looks an id up on disk: a new id (nearly every id) costs a few bit tests instead of index
seeks, and an id it may have seen is still answered exactly from disk. A false positive
costs one lookup, never a wrong answer.

Ids are added to the young generation with the time they were seen. When a prune forgets
every id older than some horizon and the old generation holds nothing newer than that
horizon, the old generation is dropped and the young one becomes old: an id stays in one
of the two for as long as it is within the window. The hash is Python's own (randomised
per process), so the filters are never written to disk: a store opened on ids already on
disk reads them back into bits of its own (:meth:`SeenFilter.blank`, on a thread of its
own) and merges them in (:meth:`SeenFilter.merge_known`); until then, or until a prune
passes the newest of them, "not in the filter" proves nothing, and
:meth:`SeenFilter.maybe_seen` passes every key.
"""

from __future__ import annotations

DEFAULT_BITS = 1 << 26  # per generation: 8 MiB; ~1 % false positives at 7 M ids per window


class _Generation:
    __slots__ = ("bits", "newest")

    def __init__(self, size: int) -> None:
        self.bits = bytearray(size >> 3)
        self.newest = float("-inf")  # the latest time of an id added


class SeenFilter:
    """Two Bloom filters of ``bits`` bits each, 3 probes per id."""

    def __init__(self, bits: int = DEFAULT_BITS, *, authoritative_after: float | None = None):
        if bits < 64 or bits & (bits - 1):
            raise ValueError(f"bits must be a power of two >= 64, got {bits}")
        self._size = bits
        self._mask = bits - 1
        self._young = _Generation(bits)
        self._old = _Generation(bits)
        # Ids on disk before this filter existed are not in it: until a prune passes the
        # newest of them, "not in the filter" proves nothing.
        self._unknown_until = authoritative_after

    def add_many(self, keys_at) -> None:
        """Add (key, time) pairs: the ids of a commit, seen at those times."""
        young = self._young
        young.newest = self.add_into(young.bits, keys_at, young.newest)

    def blank(self) -> bytearray:
        """Bits for :meth:`add_into` and :meth:`merge_known`, built apart (on another
        thread) from the filters in use."""
        return bytearray(self._size >> 3)

    def add_into(self, bits: bytearray, keys_at, newest: float) -> float:
        """Set the bits of (key, time) pairs in ``bits``; return the latest time."""
        mask = self._mask
        for key, at in keys_at:
            h = hash(key)
            a, b = h & mask, ((h >> 32) | 1) & mask
            bits[a >> 3] |= 1 << (a & 7)
            p = (a + b) & mask
            bits[p >> 3] |= 1 << (p & 7)
            p = (a + 2 * b) & mask
            bits[p >> 3] |= 1 << (p & 7)
            if at > newest:
                newest = at
        return newest

    def merge_known(self, bits: bytearray, newest: float) -> None:
        """The ids that were on disk before this filter, gathered in ``bits`` (see
        :meth:`blank`): from now on the filter knows every id, and is authoritative."""
        old = self._old
        size = len(old.bits)
        merged = int.from_bytes(old.bits, "little") | int.from_bytes(bits, "little")
        old.bits = bytearray(merged.to_bytes(size, "little"))
        if newest > old.newest:
            old.newest = newest
        self._unknown_until = None

    def maybe_seen(self, keys) -> list[bytes]:
        """The ``keys`` that may have been seen (all of them while not authoritative)."""
        if self._unknown_until is not None:
            return list(keys)
        mask = self._mask
        young, old = self._young.bits, self._old.bits
        out = []
        for key in keys:
            h = hash(key)
            a, b = h & mask, ((h >> 32) | 1) & mask
            p, q = (a + b) & mask, (a + 2 * b) & mask
            ia, ma, ip, mp = a >> 3, 1 << (a & 7), p >> 3, 1 << (p & 7)
            iq, mq = q >> 3, 1 << (q & 7)
            if (young[ia] & ma and young[ip] & mp and young[iq] & mq) or (
                old[ia] & ma and old[ip] & mp and old[iq] & mq
            ):
                out.append(key)
        return out

    def pruned(self, horizon: float) -> None:
        """Every id seen before ``horizon`` is forgotten: drop what only they needed."""
        if self._unknown_until is not None and horizon > self._unknown_until:
            self._unknown_until = None
        if self._old.newest < horizon:
            self._old = self._young
            self._young = _Generation(self._size)
