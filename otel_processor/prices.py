"""The price catalog and the cost of one model call (R7), in exact integer pico-USD.

The catalog file states USD per million tokens (the format is documented at the top of
``data/prices.yaml``). One USD per million tokens is 10**6 pico-USD per token, so a price with at
most 6 decimal places is an exact integer here and costs add up without rounding.
:func:`parse_prices` validates an already decoded document; this module does no I/O, and reading
a catalog file is :mod:`otel_processor.prices_source`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation

PICO_PER_USD = 10**12
#: pico-USD per token for 1 USD per million tokens.
_PICO_PER_TOKEN_PER_USD_PER_MILLION = PICO_PER_USD // 10**6
#: Traps instead of rounding: a price is either exact or refused.
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])
_MEMO_SIZE = 4096
_YEAR, _MONTH, _DAY = r"(?:19|20)\d\d", r"(?:0[1-9]|1[0-2])", r"(?:0[1-9]|[12]\d|3[01])"
#: A dated snapshot: <model>-YYYY-MM-DD, <model>-YYYYMMDD, <model>-MMDD, <model>@YYYYMMDD.
_SNAPSHOT = re.compile(
    rf"(?P<base>.+)(?:-{_YEAR}-{_MONTH}-{_DAY}|-{_YEAR}{_MONTH}{_DAY}|-{_MONTH}{_DAY}"
    rf"|@{_YEAR}{_MONTH}{_DAY})"
)
_MISSING = object()


class PriceError(ValueError):
    """An unreadable or invalid price catalog; the message names the field, e.g.
    ``models[3].input: must be a non-negative number``."""


@dataclass(frozen=True, slots=True)
class Price:
    """A model's prices in integer pico-USD per token (USD per million tokens x 10**6)."""

    model: str
    input: int
    output: int
    cache_read: int
    cache_write: int

    def cost_pico(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> int:
        """The exact cost of one call in pico-USD (R7).

        Cache tokens are part of ``input_tokens``: the uncached rest is billed at the input price,
        cache reads and writes at their own prices.
        """
        uncached = input_tokens - cache_read_tokens - cache_write_tokens
        if uncached < 0:  # conventions.normalize never lets this happen; never bill negative
            uncached = 0
        return (
            uncached * self.input
            + cache_read_tokens * self.cache_read
            + cache_write_tokens * self.cache_write
            + output_tokens * self.output
        )

    @classmethod
    def per_million(
        cls,
        model: str,
        input: float | str,
        output: float | str,
        cache_read: float | str | None = None,
        cache_write: float | str | None = None,
    ) -> Price:
        """A price from USD per million tokens; cache prices default to the input price."""
        pico_in = _pico_per_token(input, "input")
        return cls(
            model=model,
            input=pico_in,
            output=_pico_per_token(output, "output"),
            cache_read=pico_in if cache_read is None else _pico_per_token(cache_read, "cache_read"),
            cache_write=(
                pico_in if cache_write is None else _pico_per_token(cache_write, "cache_write")
            ),
        )


def _pico_per_token(value: object, field: str) -> int:
    """USD per million tokens (a number or a decimal string) -> exact pico-USD per token."""
    if value is None:
        raise PriceError(f"{field}: required")
    bad = PriceError(f"{field}: must be a non-negative number, got {value!r:.40}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise bad
    try:
        # str() first: a YAML float 0.075 becomes Decimal("0.075"), not its binary expansion.
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise bad from None
    if not amount.is_finite() or amount < 0:
        raise bad
    try:
        pico = _EXACT.multiply(amount, _PICO_PER_TOKEN_PER_USD_PER_MILLION)
    except (Inexact, InvalidOperation):
        pico = None
    if pico is None or pico != pico.to_integral_value():
        raise PriceError(
            f"{field}: more than 6 decimal places (USD per million tokens), got {value}"
        )
    return int(pico)


class PriceCatalog:
    """Model name -> :class:`Price`; immutable after construction, safe to share between threads.

    A name matches an entry by exact name (then case-insensitively), then by the entries' glob
    ``patterns`` in catalog order, then as a dated snapshot of a known model
    (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``). An unknown model gets no price.
    """

    def __init__(
        self, prices: Iterable[Price] = (), patterns: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        # Built here and never mutated: read without a lock.
        self._exact: dict[str, Price] = {}
        self._folded: dict[str, Price] = {}
        for price in prices:
            self._exact[price.model] = price
            self._folded.setdefault(price.model.lower(), price)
        compiled = []
        for model, globs in (patterns or {}).items():
            price = self._exact.get(model)
            if price is None:
                raise PriceError(f"patterns: {model!r} is not a model of the catalog")
            compiled += [(re.compile(fnmatch.translate(g), re.IGNORECASE), price) for g in globs]
        self._patterns = tuple(compiled)
        # name -> Price | None, cleared when full (bounded by _MEMO_SIZE); lookups run on many
        # threads without a lock because dict get, set and clear are each atomic under the GIL.
        self._memo: dict[str, Price | None] = {}

    def __len__(self) -> int:
        return len(self._exact)

    def __repr__(self) -> str:
        return f"PriceCatalog({len(self)} models)"

    def lookup(self, *names: str | None) -> Price | None:
        """The price of the first name that matches (pass the response model, then the request
        model); None and "" are skipped; None when no name matches."""
        for name in names:
            if not name:
                continue
            price = self._memo.get(name, _MISSING)
            if price is _MISSING:
                price = self._resolve(name)
                if len(self._memo) >= _MEMO_SIZE:
                    self._memo.clear()
                self._memo[name] = price
            if price is not None:
                return price
        return None

    def _exactly(self, name: str) -> Price | None:
        return self._exact.get(name) or self._folded.get(name.lower())

    def _resolve(self, name: str) -> Price | None:
        price = self._exactly(name)
        if price is None:
            price = next((p for pattern, p in self._patterns if pattern.match(name)), None)
        if price is None:
            snapshot = _SNAPSHOT.fullmatch(name)
            if snapshot is not None:
                price = self._exactly(snapshot["base"])
        return price


def _model_name(value: object, path: str) -> str:
    if value is None:
        raise PriceError(f"{path}: required")
    if not isinstance(value, str) or not value.strip():
        raise PriceError(f"{path}: must be a non-empty string, got {value!r:.40}")
    return value.strip()


def parse_prices(doc: object) -> PriceCatalog:
    """Validate a decoded catalog document; :class:`PriceError` names the first bad field."""
    if not isinstance(doc, Mapping):
        raise PriceError(f"prices: must be a mapping, got {type(doc).__name__}")
    entries = doc.get("models")
    if entries is None:
        raise PriceError("models: required")
    if not isinstance(entries, list):
        raise PriceError(f"models: must be a list, got {type(entries).__name__}")
    prices: dict[str, Price] = {}
    patterns: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        path = f"models[{i}]"
        if not isinstance(entry, Mapping):
            raise PriceError(f"{path}: must be a mapping, got {type(entry).__name__}")
        model = _model_name(entry.get("model"), f"{path}.model")
        if model.lower() in prices:
            raise PriceError(f"{path}.model: duplicate model {model!r}")
        pico_in = _pico_per_token(entry.get("input"), f"{path}.input")
        output = _pico_per_token(entry.get("output"), f"{path}.output")
        cache = {  # a model without cache prices bills its cache tokens at the input price (R7)
            key: pico_in if entry.get(key) is None else _pico_per_token(entry[key], f"{path}.{key}")
            for key in ("cache_read", "cache_write")
        }
        prices[model.lower()] = Price(model, pico_in, output, **cache)
        globs = entry.get("patterns") or []
        if not isinstance(globs, list):
            raise PriceError(f"{path}.patterns: must be a list, got {type(globs).__name__}")
        for j, glob in enumerate(globs):
            patterns.setdefault(model, []).append(_model_name(glob, f"{path}.patterns[{j}]"))
    return PriceCatalog(prices.values(), patterns)
