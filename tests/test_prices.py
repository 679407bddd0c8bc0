"""The price catalog: exact pico-USD costs (R7), name matching, validation, the default file."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from otel_processor.prices import PICO_PER_USD, Price, PriceCatalog, PriceError, parse_prices
from otel_processor.prices_source import default_prices_path, load_prices


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_prices()


# --- the default catalog -------------------------------------------------------------------

# model, input, output, cache_read, cache_write: USD per million tokens, as the brief lists them
LIST_PRICES = [
    ("gpt-4o", "2.50", "10.00", "1.25", "2.50"),
    ("gpt-4o-mini", "0.15", "0.60", "0.075", "0.15"),
    ("gpt-4", "30", "60", "30", "30"),
    ("gpt-4-turbo", "10", "30", "10", "10"),
    ("gpt-3.5-turbo", "0.50", "1.50", "0.50", "0.50"),
    ("text-embedding-3-small", "0.02", "0", "0.02", "0.02"),
    ("text-embedding-3-large", "0.13", "0", "0.13", "0.13"),
    ("claude-sonnet-4-5", "3", "15", "0.30", "3.75"),
    ("claude-opus-4-5", "5", "25", "0.50", "6.25"),
    ("claude-3-5-haiku", "0.80", "4", "0.08", "1.00"),
    ("claude-3-haiku", "0.25", "1.25", "0.03", "0.30"),
    ("claude-3-5-sonnet", "3", "15", "0.30", "3.75"),
    ("deepseek-chat", "0.27", "1.10", "0.07", "0.27"),
    ("qwen-max", "1.60", "6.40", "1.60", "1.60"),
    ("qwen-turbo", "0.05", "0.20", "0.05", "0.05"),
    ("glm-4", "0.14", "0.14", "0.14", "0.14"),
]


@pytest.mark.parametrize("row", LIST_PRICES, ids=lambda r: r[0])
def test_default_catalog_has_the_public_list_price(catalog, row):
    model, *usd = row
    assert catalog.lookup(model) == Price.per_million(model, *usd)


def test_default_catalog_has_exactly_the_listed_models(catalog):
    assert len(catalog) == len(LIST_PRICES)


def test_default_catalog_ships_in_the_package():
    path = default_prices_path()
    assert path.name == "prices.yaml" and path.parent.parent.name == "otel_processor"
    assert "list prices" in path.read_text().lower()


# --- cost -----------------------------------------------------------------------------------


def test_gpt_4o_call_costs_exactly_its_list_price(catalog):
    # 100 * 2.50e-6 + 50 * 10.00e-6 USD = 0.00075 USD
    assert catalog.lookup("gpt-4o").cost_pico(100, 50) == 750_000_000
    assert Decimal(catalog.lookup("gpt-4o").cost_pico(100, 50)) / PICO_PER_USD == Decimal("0.00075")


@pytest.mark.parametrize(
    ("model", "tokens", "pico"),
    [
        # the worked example's calls
        ("gpt-4o-mini", (200, 20), 200 * 150_000 + 20 * 600_000),
        ("qwen-max", (30, 30), 30 * 1_600_000 + 30 * 6_400_000),
        # 400 of 1000 input tokens read from the cache at 1.25 instead of 2.50
        ("gpt-4o", (1000, 0, 400), 600 * 2_500_000 + 400 * 1_250_000),
        # read 300 at 0.30, write 200 at 3.75, the other 500 input at 3.00, output at 15.00
        (
            "claude-sonnet-4-5",
            (1000, 100, 300, 200),
            500 * 3_000_000 + 300 * 300_000 + 200 * 3_750_000 + 100 * 15_000_000,
        ),
        # a million embedding tokens at 0.02 USD per million: 0.02 USD
        ("text-embedding-3-small", (1_000_000, 0), 2 * PICO_PER_USD // 100),
    ],
    ids=["gpt-4o-mini", "qwen-max", "gpt-4o-cache-read", "claude-read-and-write", "embedding"],
)
def test_cost_follows_the_r7_formula(catalog, model, tokens, pico):
    assert catalog.lookup(model).cost_pico(*tokens) == pico


def test_model_without_cache_prices_bills_cache_tokens_at_the_input_price(catalog):
    gpt4 = catalog.lookup("gpt-4")
    assert (
        gpt4.cost_pico(1000, 10, 400, 100)
        == gpt4.cost_pico(1000, 10)
        == 1000 * 30_000_000 + 10 * 60_000_000
    )


def test_more_cache_than_input_never_bills_negative_input():
    price = Price.per_million("m", "1", "2", "0.5", "4")
    assert price.cost_pico(10, 0, 20, 5) == 20 * 500_000 + 5 * 4_000_000


_USD_PER_MILLION = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False)


@given(
    prices=st.tuples(_USD_PER_MILLION, _USD_PER_MILLION, _USD_PER_MILLION, _USD_PER_MILLION),
    cache_read=st.integers(0, 10**9),
    cache_write=st.integers(0, 10**9),
    uncached=st.integers(0, 10**9),
    output=st.integers(0, 10**9),
)
def test_cost_is_the_exact_decimal_formula(prices, cache_read, cache_write, uncached, output):
    p_in, p_out, p_read, p_write = prices
    price = Price.per_million("m", str(p_in), str(p_out), str(p_read), str(p_write))
    usd = (uncached * p_in + cache_read * p_read + cache_write * p_write + output * p_out) / (
        Decimal(10**6)
    )
    got = price.cost_pico(uncached + cache_read + cache_write, output, cache_read, cache_write)
    assert Decimal(got) == usd * PICO_PER_USD


# --- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o"),
        ("GPT-4o-2024-08-06", "gpt-4o"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4-1106-preview", "gpt-4-turbo"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20241022", "claude-3-5-sonnet"),
        ("claude-3.5-sonnet", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("claude-haiku-3-5", "claude-3-5-haiku"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("claude-opus-4-5@20251101", "claude-opus-4-5"),
        ("qwen-max-0428", "qwen-max"),
    ],
)
def test_model_names_find_their_catalog_entry(catalog, name, model):
    assert catalog.lookup(name).model == model


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-realtime-preview",
        "gpt-4o-mini-tts",
        "gpt-4o-2024-13-01",  # no such month: not a dated snapshot
        "gpt-4o-2024-08-06-extra",
        "gpt-4o-",
        "llama-3-70b",
        "gpt",
    ],
)
def test_unknown_model_gets_no_price(catalog, name):
    assert catalog.lookup(name) is None


def test_snapshot_of_an_unlisted_model_does_not_borrow_a_shorter_models_price():
    only_gpt_4o = parse_prices({"models": [{"model": "gpt-4o", "input": 2.5, "output": 10}]})
    assert only_gpt_4o.lookup("gpt-4o-mini-2024-07-18") is None
    assert only_gpt_4o.lookup("gpt-4o-2024-08-06").model == "gpt-4o"


def test_exact_name_wins_over_an_earlier_entrys_pattern():
    c = parse_prices(
        {
            "models": [
                {"model": "broad", "input": 1, "output": 1, "patterns": ["family-*"]},
                {"model": "family-pro", "input": 2, "output": 2},
                {"model": "other", "input": 3, "output": 3, "patterns": ["FAMILY-*"]},
            ]
        }
    )
    assert c.lookup("family-pro").model == "family-pro"
    assert c.lookup("family-lite").model == "broad"  # first pattern in catalog order


def test_lookup_tries_each_name_in_order_and_skips_missing_ones(catalog):
    assert catalog.lookup("gpt-4o-mini-2024-07-18", "gpt-4o").model == "gpt-4o-mini"
    assert catalog.lookup("my-finetune", "gpt-4o").model == "gpt-4o"
    assert catalog.lookup(None, "", "qwen-max").model == "qwen-max"
    assert catalog.lookup(None) is None
    assert catalog.lookup() is None


def test_lookup_stays_right_after_the_memo_overflows():
    c = parse_prices({"models": [{"model": "m", "input": 1, "output": 2}]})
    assert c.lookup("m-2024-01-01").model == "m"
    for i in range(10_000):
        assert c.lookup(f"unknown-{i}") is None
    assert c.lookup("m-2024-01-01").model == "m"
    assert c.lookup("unknown-1") is None


# --- validation ----------------------------------------------------------------------------


def _one(**entry) -> dict:
    return {"models": [{"model": "m", "input": 1, "output": 1, **entry}]}


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        pytest.param([], "prices: must be a mapping, got list", id="not_a_mapping"),
        pytest.param({}, "models: required", id="models_missing"),
        pytest.param({"models": {}}, "models: must be a list, got dict", id="models_not_list"),
        pytest.param({"models": ["m"]}, "models[0]: must be a mapping, got str", id="entry_str"),
        pytest.param(
            {"models": [{"input": 1, "output": 1}]}, "models[0].model: required", id="no_model"
        ),
        pytest.param(
            _one(model=" "), "models[0].model: must be a non-empty string, got ' '", id="blank"
        ),
        pytest.param(_one(model=4), "models[0].model: must be a non-empty string, got 4", id="int"),
        pytest.param(_one(input=None), "models[0].input: required", id="input_missing"),
        pytest.param(_one(output=None), "models[0].output: required", id="output_missing"),
        pytest.param(
            _one(input=-1), "models[0].input: must be a non-negative number, got -1", id="negative"
        ),
        pytest.param(
            _one(output="abc"),
            "models[0].output: must be a non-negative number, got 'abc'",
            id="not_a_number",
        ),
        pytest.param(
            _one(input=True), "models[0].input: must be a non-negative number, got True", id="bool"
        ),
        pytest.param(
            _one(input=float("nan")),
            "models[0].input: must be a non-negative number, got nan",
            id="nan",
        ),
        pytest.param(
            _one(input=float("inf")),
            "models[0].input: must be a non-negative number, got inf",
            id="infinite",
        ),
        pytest.param(
            _one(input=[1]), "models[0].input: must be a non-negative number, got [1]", id="list"
        ),
        pytest.param(
            _one(cache_read=-0.5),
            "models[0].cache_read: must be a non-negative number, got -0.5",
            id="cache_read_negative",
        ),
        pytest.param(
            _one(cache_write="x"),
            "models[0].cache_write: must be a non-negative number, got 'x'",
            id="cache_write_not_a_number",
        ),
        pytest.param(
            _one(input=0.0000001),
            "models[0].input: more than 6 decimal places (USD per million tokens), got 1e-07",
            id="seven_decimals_float",
        ),
        pytest.param(
            _one(output="0.1234567"),
            "models[0].output: more than 6 decimal places (USD per million tokens), got 0.1234567",
            id="seven_decimals_string",
        ),
        pytest.param(
            _one(patterns="m-*"), "models[0].patterns: must be a list, got str", id="patterns_str"
        ),
        pytest.param(
            _one(patterns=["m-*", ""]),
            "models[0].patterns[1]: must be a non-empty string, got ''",
            id="pattern_blank",
        ),
        pytest.param(
            {
                "models": [
                    {"model": "a", "input": 1, "output": 1},
                    {"model": "b", "input": 1, "output": 1},
                    {"model": "c", "input": 1, "output": 1},
                    {"model": "d", "input": "-0.01", "output": 1},
                ]
            },
            "models[3].input: must be a non-negative number, got '-0.01'",
            id="fourth_entry",
        ),
        pytest.param(
            {
                "models": [
                    {"model": "gpt-4o", "input": 1, "output": 1},
                    {"model": "GPT-4o", "input": 2, "output": 2},
                ]
            },
            "models[1].model: duplicate model 'GPT-4o'",
            id="duplicate_model",
        ),
    ],
)
def test_bad_catalog_is_refused_with_an_error_naming_the_field(doc, error):
    with pytest.raises(PriceError) as info:
        parse_prices(doc)
    assert str(info.value) == error


@pytest.mark.parametrize(
    ("usd", "pico"),
    [
        ("0.000001", 1),
        (0.000001, 1),
        (0.075, 75_000),
        ("2.50", 2_500_000),
        (30, 30_000_000),
        ("1.1000000", 1_100_000),
        (0, 0),
    ],
)
def test_six_decimal_places_convert_exactly(usd, pico):
    assert parse_prices(_one(input=usd)).lookup("m").input == pico


def test_cache_prices_default_to_the_input_price():
    price = parse_prices(_one(input="0.5", output="2", cache_read="0.1")).lookup("m")
    assert price == Price(
        "m", input=500_000, output=2_000_000, cache_read=100_000, cache_write=500_000
    )


def test_pattern_of_an_unknown_model_is_refused_by_the_constructor():
    with pytest.raises(PriceError) as info:
        PriceCatalog([Price("m", 1, 1, 1, 1)], patterns={"n": ["n-*"]})
    assert str(info.value) == "patterns: 'n' is not a model of the catalog"


# --- load_prices ---------------------------------------------------------------------------


def test_load_prices_reads_json_and_yaml_files_alike(tmp_path):
    doc = {"models": [{"model": "m", "input": "0.5", "output": 1, "patterns": ["m-*"]}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    for name in ("p.json", "p.yaml"):
        c = load_prices(tmp_path / name)
        assert len(c) == 1 and c.lookup("m-large") == Price(
            "m", 500_000, 1_000_000, 500_000, 500_000
        )


def test_load_prices_errors_name_the_file(tmp_path):
    with pytest.raises(PriceError) as info:
        load_prices(tmp_path / "absent.yaml")
    assert str(info.value) == f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory"
    (tmp_path / "broken.yaml").write_text("models: [\n")
    with pytest.raises(PriceError) as info:
        load_prices(tmp_path / "broken.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'broken.yaml'}: not valid YAML or JSON: ")
    (tmp_path / "bad.yaml").write_text("models:\n  - {model: m, input: 1}\n")
    with pytest.raises(PriceError) as info:
        load_prices(str(tmp_path / "bad.yaml"))
    assert str(info.value) == f"{tmp_path / 'bad.yaml'}: models[0].output: required"
