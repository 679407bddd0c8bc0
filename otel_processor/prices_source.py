"""Reading a price catalog file: the packaged list prices or an operator's own catalog.

:func:`load_prices` reads and decodes a YAML or JSON file; :func:`parse_prices` of
:mod:`otel_processor.prices` does the validation.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib

import yaml

from otel_processor.prices import PriceCatalog, PriceError, parse_prices


def default_prices_path() -> pathlib.Path:
    """The list-price catalog shipped in the package."""
    return pathlib.Path(
        str(importlib.resources.files("otel_processor").joinpath("data", "prices.yaml"))
    )


def load_prices(path: str | os.PathLike | None = None) -> PriceCatalog:
    """Load and validate a catalog file (YAML or JSON); None loads the packaged default.

    Raises :class:`PriceError` for any failure; the message starts with the path.
    """
    where = os.fspath(default_prices_path() if path is None else path)
    try:
        doc = yaml.safe_load(pathlib.Path(where).read_bytes())
    except OSError as exc:
        raise PriceError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise PriceError(f"{where}: not valid YAML or JSON: {detail}") from None
    try:
        return parse_prices(doc)
    except PriceError as exc:
        raise PriceError(f"{where}: {exc}") from None
