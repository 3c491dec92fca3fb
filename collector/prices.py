"""Estimated prices of model calls: tokens times the prices that genai-prices ships (its data
is inside the package: no network at run time), by the model an agent or an endpoint names;
a prices file maps endpoint names to models and overrides prices (negotiated ones).

Input, output, cache-read and cache-write tokens are priced separately, each at the model's
base tier (genai-prices knows tiers by prompt size; an estimate per call uses the first).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Price", "Prices", "PricesError"]

_PER_MILLION = 1_000_000
# Databricks serving endpoints name models with dashes for dots (databricks-gpt-5-2,
# databricks-gemini-2-5-flash); Anthropic's own ids keep the dashes (claude-opus-4-6).
_PREFIXES = ("databricks-",)
_VERSION_DASH = re.compile(r"(?<=\d)-(?=\d)")


class PricesError(ValueError):
    """The prices file cannot be read; the message says where and why."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    @classmethod
    def from_toml(cls, table: Any, where: str) -> Price:
        """A price as a TOML table gives it: ``input`` and ``output`` USD per million tokens,
        ``cache_read`` and ``cache_write`` optional (the input price if absent)."""
        try:
            return cls(
                float(table["input"]),
                float(table["output"]),
                float(table.get("cache_read", table["input"])),
                float(table.get("cache_write", table["input"])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PricesError(
                f"{where}: needs input and output in USD per million tokens (cache_read, "
                f"cache_write optional): {e}"
            ) from None

    def parts(
        self, input: int, output: int, cache_read: int, cache_write: int
    ) -> tuple[float, float, float, float]:
        """What each kind of token of a call costs, USD: ``input`` counts the uncached input."""
        return (
            input * self.input / _PER_MILLION,
            output * self.output / _PER_MILLION,
            cache_read * self.cache_read / _PER_MILLION,
            cache_write * self.cache_write / _PER_MILLION,
        )

    def cost(self, input: int, output: int, cache_read: int, cache_write: int) -> float:
        """The price of a call: ``input`` counts the uncached input only."""
        return sum(self.parts(input, output, cache_read, cache_write))


@dataclass(frozen=True)
class Prices:
    """Model and endpoint names → prices: the overrides, then genai-prices by the mapped name,
    the name itself, or the name with a serving prefix and dashed versions undone."""

    models: Mapping[str, str] = field(default_factory=dict)  # name → [provider/]model
    overrides: Mapping[str, Price] = field(default_factory=dict)  # name → price

    @classmethod
    def load(cls, path: Path | None) -> Prices:
        if path is None:
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise PricesError(f"prices file {path}: {e}") from None
        models = data.get("models", {})
        if not isinstance(models, dict) or not all(isinstance(v, str) for v in models.values()):
            raise PricesError(f'prices file {path}: [models] maps names to "provider/model"')
        overrides = {
            name: Price.from_toml(table, f"prices file {path}, [price.{name!r}]")
            for name, table in data.get("price", {}).items()
        }
        unknown = set(data) - {"models", "price"}
        if unknown:
            raise PricesError(f"prices file {path}: unknown section(s) {sorted(unknown)}")
        return cls(dict(models), overrides)

    def price(self, name: str | None) -> Price | None:
        """The price per million tokens of the model ``name`` stands for (a name, or
        ``provider/model``); None if unknown."""
        if not name:
            return None
        if name in self.overrides:
            return self.overrides[name]
        mapped = self.models.get(name)
        if mapped is not None:
            provider, _, model = mapped.rpartition("/")
            return _known(model, provider or None)
        if "/" in name:
            provider, _, model = name.rpartition("/")
            found = _known(model, provider)
            if found is not None:
                return found
        for candidate in _candidates(name):
            found = _known(candidate, None)
            if found is not None:
                return found
        return None

    def cost(
        self, name: str | None, input: int, output: int, cache_read: int, cache_write: int
    ) -> float | None:
        price = self.price(name)
        return None if price is None else price.cost(input, output, cache_read, cache_write)


def _candidates(name: str) -> list[str]:
    bare = name
    for prefix in _PREFIXES:
        if bare.startswith(prefix):
            bare = bare[len(prefix) :]
    return list(dict.fromkeys([name, bare, _VERSION_DASH.sub(".", bare)]))


@functools.cache
def _known(model: str, provider: str | None) -> Price | None:
    """genai-prices' base-tier price of ``model``, per million tokens of each kind."""
    from genai_prices import Usage, calc_price  # its data loads on first use

    def per_million(**usage: int) -> float | None:
        try:
            result = calc_price(Usage(**usage), model_ref=model, provider_id=provider)
        except (LookupError, ValueError):  # a model, or a provider, it does not know
            return None
        return float(result.total_price) * _PER_MILLION / 1000

    base = per_million(input_tokens=1000)
    if base is None:
        return None
    output = per_million(output_tokens=1000)
    # Cached tokens are part of the input in genai-prices' usage, as in OpenAI's.
    cache_read = per_million(input_tokens=1000, cache_read_tokens=1000)
    cache_write = per_million(input_tokens=1000, cache_write_tokens=1000)
    return Price(
        base,
        output if output is not None else base,
        cache_read if cache_read is not None else base,
        cache_write if cache_write is not None else base,
    )
