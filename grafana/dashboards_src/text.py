"""The dashboards' words, one table per language (``texts_en.py``, ``texts_zh.py``).

Every title, description, column header, legend and link text of a dashboard is looked up
here by key; the generator writes each dashboard once per language from the same code, so
the languages differ in their words only. A text may quote another with ``{@key}`` (the
shared sentences about caller attribution, heat and cost metrics).
"""

from __future__ import annotations

import re

from . import texts_en, texts_zh

TABLES: dict[str, dict[str, str]] = {"en": texts_en.TEXTS, "zh": texts_zh.TEXTS}
_QUOTE = re.compile(r"\{@([a-z0-9_.]+)\}")


class Text:
    """The texts of one language; remembers which keys were used."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.table = TABLES[lang]
        self.used: set[str] = set()

    def __call__(self, key: str) -> str:
        if key not in self.table:
            raise KeyError(f"no {self.lang} text for {key!r} (grafana/dashboards_src/"
                           f"texts_{self.lang}.py)")
        self.used.add(key)
        return _QUOTE.sub(lambda m: self(m.group(1)), self.table[key])
