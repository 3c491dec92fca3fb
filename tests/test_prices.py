"""Estimated prices: genai-prices' data (offline) times the tokens, by the names agents and
Databricks endpoints use; the prices file's mapping and overrides; a bad file is a clear
start-up error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from collector.config import Config, ConfigError
from collector.prices import Price, Prices, PricesError
from tests.conftest import ROOT

TOKENS = (12_000, 800, 30_000, 1_500)  # uncached input, output, cache read, cache write
# A long session's prompt: past the 200k tokens where Claude Sonnet's and Gemini Pro's prices
# rise, for every token of the call.
LONG = (40_000, 2_000, 170_000, 9_000)


def _reference(model: str, provider: str | None = None, tokens: tuple[int, ...] = TOKENS) -> float:
    inp, out, read, write = tokens
    usage = Usage(input_tokens=inp + read + write, output_tokens=out, cache_read_tokens=read,
                  cache_write_tokens=write)  # fmt: skip
    return float(calc_price(usage, model_ref=model, provider_id=provider).total_price)


@pytest.mark.parametrize(
    "name, model",
    [
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("databricks-claude-opus-4-6", "claude-opus-4-6"),
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("databricks-gpt-5-2", "gpt-5.2"),
        ("gpt-5", "gpt-5"),
        ("databricks-gemini-2-5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-pro", "gemini-2.5-pro"),
    ],
)
def test_known_models_cost_what_the_price_data_says(name: str, model: str) -> None:
    assert Prices().cost(name, *TOKENS) == pytest.approx(_reference(model), rel=1e-12)
    assert Prices().cost(name, *LONG) == pytest.approx(_reference(model, None, LONG), rel=1e-12)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-pro"])
def test_a_long_prompt_is_priced_at_its_tier(model: str) -> None:
    long, short = _reference(model, None, LONG), _reference(model, None, (39_000, 2_000, 0, 0))
    assert Prices().cost(model, *LONG) == pytest.approx(long, rel=1e-12)
    price = Prices().price(model)
    assert price is not None
    base = Price(price.input, price.output, price.cache_read, price.cache_write)
    assert long > 1.5 * base.cost(*LONG)  # the base tier would undercount it
    assert Prices().cost(model, 39_000, 2_000, 0, 0) == pytest.approx(short, rel=1e-12)


def test_an_unknown_model_has_no_price() -> None:
    assert Prices().price("databricks-my-finetune") is None
    assert Prices().cost("no-such-model-9", *TOKENS) is None
    assert Prices().cost(None, *TOKENS) is None


def test_the_prices_file_maps_names_and_overrides_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models]\n"team-claude" = "anthropic/claude-haiku-4-5"\n'
        '[price."databricks-my-finetune"]\ninput = 3.0\noutput = 15.0\ncache_read = 0.3\n'
        '[price."gpt-5"]\ninput = 1.0\noutput = 8.0\ncache_read = 0.1\ncache_write = 1.0\n'
    )
    prices = Prices.load(path)
    assert prices.cost("team-claude", *TOKENS) == pytest.approx(_reference("claude-haiku-4-5"))
    assert prices.price("databricks-my-finetune") == Price(3.0, 15.0, 0.3, 3.0)
    inp, out, read, write = TOKENS
    assert prices.cost("gpt-5", *TOKENS) == pytest.approx(
        (inp * 1.0 + out * 8.0 + read * 0.1 + write * 1.0) / 1e6
    )  # a negotiated price wins over the data's


@pytest.mark.parametrize(
    "text, words",
    [
        ('[price."x"]\ninput = 1.0\n', "[price.'x']: needs input and output"),
        ('[price."x"]\ninput = "cheap"\noutput = 1\n', "[price.'x']: needs input and output"),
        ("[models]\nx = 3\n", '[models] maps names to "provider/model"'),
        ("[prices]\n", "unknown section(s) ['prices']"),
        ("[models\n", "prices file"),
    ],
)
def test_a_bad_prices_file_says_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PricesError, match=None) as raised:
        Prices.load(path)
    assert words in str(raised.value)
    with pytest.raises(ConfigError, match="--prices"):
        Config.load({"prices": str(path)}, {}).check()


def test_serve_refuses_to_start_on_a_bad_prices_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[price."x"]\noutput = 1\n')
    done = subprocess.run(
        [sys.executable, "-m", "collector", "serve", "--warehouse", str(tmp_path / "wh"),
         "--prices", str(path), "--http", "127.0.0.1:0", "--grpc", "off"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--prices: prices file" in done.stderr and "needs input and output" in done.stderr
