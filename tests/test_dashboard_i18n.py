"""English and Simplified Chinese dashboards from one source.

The generator (grafana/dashboards_src/) writes every dashboard once per language from the
same code; the words come from one text table per language. These tests fail when a text
exists in one language only, when a text is unused or untranslated, and when the two
languages differ in anything but their words (so every query test on the English
dashboards holds for the Chinese ones).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.dashboard_grafana import (
    DRILL,
    OVERVIEW,
    all_panels,
    dashboards,
    panel,
    rows_of,
    uid_in,
)
from tests.dashboard_world import (  # noqa: F401 (fixtures)
    H,
    expected_fixture,
    prom_fixture,
    world_fixture,
)
from tests.dashboard_world import at as V

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
if str(GRAFANA) not in sys.path:
    sys.path.insert(0, str(GRAFANA))

import dashboards_src  # noqa: E402
from dashboards_src.text import TABLES, Text  # noqa: E402

CJK = re.compile(r"[\u4e00-\u9fff]")
_QUOTE = re.compile(r"\{@([a-z0-9_.]+)\}")


def test_every_text_exists_in_both_languages():
    en, zh = set(TABLES["en"]), set(TABLES["zh"])
    assert not en - zh, f"English only: {sorted(en - zh)}"
    assert not zh - en, f"Chinese only: {sorted(zh - en)}"


@pytest.mark.parametrize("lang", sorted(TABLES))
def test_every_text_is_used_nonempty_and_quotes_only_existing_texts(lang):
    table = TABLES[lang]
    _, t = dashboards_src.build(lang)
    assert not set(table) - t.used, f"unused {lang} texts: {sorted(set(table) - t.used)}"
    for key, text in table.items():
        assert text.strip(), key
        for quoted in _QUOTE.findall(text):
            assert quoted in table, (key, quoted)
        assert "{@" not in Text(lang)(key), key


def test_every_chinese_text_is_translated():
    """Each Chinese text has Chinese in it and differs from the English one."""
    for key in TABLES["zh"]:
        rendered = Text("zh")(key)
        assert CJK.search(rendered) or key in ("link.menu",), (key, rendered)
        assert rendered != Text("en")(key), key


def _texts(lang: str) -> dict[str, str]:
    t = Text(lang)
    return {key: t(key) for key in TABLES[lang]}


def _walk(a, b, path=""):
    """Yields the string leaves where the two trees differ; fails on any other
    difference (structure, numbers, keys)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            yield from _walk(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _walk(x, y, f"{path}[{i}]")
    elif isinstance(a, str) and a != b:
        yield path, a, b
    else:
        assert a == b, (path, a, b)


def _same_uids(text: str) -> str:
    """A Chinese string with its uids and language tag as in English."""
    for base in dashboards_src.BUILDERS:
        text = text.replace(uid_in(base, "zh"), base)
    return "en" if text == "zh" else text


def test_the_languages_differ_in_their_words_only():
    """Same panels, queries, transformations, layout; every string that differs is one
    text of the tables in each language (or a uid / language tag)."""
    en_texts, zh_texts = _texts("en"), _texts("zh")
    pairs = {(en_texts[k], zh_texts[k]) for k in en_texts}
    en_dashboards, zh_dashboards = dashboards("en"), dashboards("zh")
    assert [uid_in(u, "zh") for u in en_dashboards] == list(zh_dashboards)
    translated = 0
    for base, en in en_dashboards.items():
        zh = zh_dashboards[uid_in(base, "zh")]
        for path, a, b in _walk(en, zh):
            if _same_uids(b) == a:
                continue
            assert (a, b) in pairs, f"{base}{path}: {a!r} / {b!r} is no text of the tables"
            assert not path.endswith(".expr"), path
            translated += 1
    assert translated > 150


def test_chinese_wording_follows_the_prd():
    zh = dashboards("zh")
    overview = zh[uid_in(OVERVIEW, "zh")]
    titles = [p["title"] for p in overview["panels"]]
    assert titles[:2] == ["智能体Token消耗", "工作流Token消耗"]
    assert all("调用者归属" in p["description"] for p in overview["panels"])
    assert "对话工作流" in overview["panels"][0]["description"]
    assert {link["title"] for p in overview["panels"] for link in p.get("links", [])} == {
        "查看全部"}
    drill = zh[uid_in(DRILL, "zh")]
    assert [p["title"] for p in drill["panels"]] == [
        "模型消耗明细", "智能体消耗明细 (Token)", "工作流消耗明细 (Token)", "成员Token消耗排行"]
    headers = [next(s for s in p["transformations"] if s["id"] == "organize")["options"]
               ["renameByName"] for p in drill["panels"]]
    assert set(headers[0].values()) == {"模型名称", "Token总消耗", "输入Token", "输出Token",
                                        "消耗占比"}
    assert set(headers[1].values()) == {"智能体名称", "Token总消耗", "输入Token", "输出Token",
                                        "创建时间", "创建人"}
    assert set(headers[3].values()) == {"排行", "成员", "Token总消耗", "输入Token",
                                        "输出Token"}
    variables = {v["name"]: v["label"] for v in drill["templating"]["list"]}
    assert variables == {"datasource": "数据源", "tenant": "租户", "search": "搜索"}


@pytest.mark.parametrize("title", ["Member ranking", "Agent consumption detail"])
def test_a_chinese_table_shows_the_english_numbers_under_chinese_headers(prom, title):
    view = V(tenant="initech", range_s=6 * H)
    en_panels = [p for _, p in all_panels("en")]
    zh_panels = [p for _, p in all_panels("zh")]
    zh = zh_panels[[p["title"] for p in en_panels].index(title)]
    en_rows, zh_rows = rows_of(prom, [(panel(DRILL, title), view), (zh, view)])
    assert en_rows and [list(r.values()) for r in zh_rows] == [
        list(r.values()) for r in en_rows]
    assert all(CJK.search(k) or k.endswith("Token") for r in zh_rows for k in r)
