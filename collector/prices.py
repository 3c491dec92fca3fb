"""Estimated prices of model calls: tokens times the prices that genai-prices ships (its data
is inside the package: no network at run time), by the model an agent or an endpoint names;
a prices file maps endpoint names to models and overrides prices (negotiated ones).

Input, output, cache-read and cache-write tokens are priced separately, each at the model's
base tier (genai-prices knows tiers by prompt size; an estimate per call uses the first).
"""

from __future__ import annotations

import functools
import math
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
    # A long prompt's prices: (more input tokens than this, the price of all the call's
    # tokens then), ascending. As providers bill: crossing a tier prices every token at it.
    tiers: tuple[tuple[int, Price], ...] = ()

    def at(self, total_input: int) -> Price:
        """The price of a call with ``total_input`` tokens of input, cached or not."""
        price = self
        for start, tier in self.tiers:
            if total_input > start:
                price = tier
        return price

    @classmethod
    def from_toml(cls, table: Any, where: str) -> Price:
        """A price as a TOML table gives it: ``input`` and ``output`` USD per million tokens,
        ``cache_read`` and ``cache_write`` optional (the input price if absent)."""
        try:
            price = cls(
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
        rates = (price.input, price.output, price.cache_read, price.cache_write)
        if not all(math.isfinite(v) and v >= 0 for v in rates):
            raise PricesError(f"{where}: prices are USD per million tokens, ≥ 0: {price}")
        return price

    def parts(
        self, input: int, output: int, cache_read: int, cache_write: int
    ) -> tuple[float, float, float, float]:
        """What each kind of token of a call costs, USD: ``input`` counts the uncached input;
        the tier is the one all its input reaches."""
        tiered = self.at(input + cache_read + cache_write)
        if tiered is not self:
            return tiered.parts(input, output, cache_read, cache_write)
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
    """genai-prices' price of ``model``, per million tokens of each kind, with its tiers."""
    from genai_prices import Usage, calc_price  # its data loads on first use
    from genai_prices.types import TieredPrices

    try:
        found = calc_price(Usage(input_tokens=1), model_ref=model, provider_id=provider)
    except (LookupError, ValueError):  # a model, or a provider, it does not know
        return None
    data = found.model_price
    rates = [data.input_mtok, data.output_mtok, data.cache_read_mtok, data.cache_write_mtok]

    def price_at(total_input: int) -> Price:
        def rate(value: Any) -> float | None:
            if isinstance(value, TieredPrices):
                applies = value.base
                for tier in value.tiers:
                    if total_input > tier.start:
                        applies = tier.price
                value = applies
            return None if value is None else float(value)

        input, output, cache_read, cache_write = (rate(r) for r in rates)
        input = input or 0.0
        return Price(
            input,
            input if output is None else output,
            input if cache_read is None else cache_read,
            input if cache_write is None else cache_write,
        )

    starts = sorted({t.start for r in rates if isinstance(r, TieredPrices) for t in r.tiers})
    base = price_at(0)
    return Price(base.input, base.output, base.cache_read, base.cache_write,
                 tuple((start, price_at(start + 1)) for start in starts))  # fmt: skip
