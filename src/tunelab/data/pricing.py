"""Training prices: a dated table shipped with tunelab, optionally overridden by a file.

`resources/prices.json` holds USD per 1M training tokens per provider, model and method
(the first method listed is the provider's default: "standard" for OpenAI, "lora" for
Together), with an `as_of` date and a source URL per provider. `--prices FILE` (same shape)
is merged over it: a provider, model or method it names replaces the shipped one, and a
provider may carry its own `as_of`. Local training has no price; it costs compute time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class Price:
    provider: str
    model: str
    method: str
    usd_per_million: float
    as_of: str | None
    source: str | None

    def cost(self, tokens: int) -> float:
        return round(tokens / 1_000_000 * self.usd_per_million, 6)


def load_prices(override: str | Path | None = None) -> list[Price]:
    """Every price in the shipped table, with `override` merged over it."""
    table = json.loads(resources.files("tunelab").joinpath("resources/prices.json").read_text())
    if override is not None:
        table = _merge(table, _read_override(Path(override)))
    prices = []
    for provider, entry in table.get("providers", {}).items():
        as_of = entry.get("as_of", table.get("as_of"))
        for model, methods in entry.get("models", {}).items():
            for method, usd in methods.items():
                prices.append(
                    Price(provider, model, method, float(usd), as_of, entry.get("source"))
                )
    return prices


def price_for(prices: list[Price], provider: str, model: str) -> Price | None:
    """The price of training `model` with the provider's default (first listed) method."""
    return next((p for p in prices if p.provider == provider and p.model == model), None)


def _read_override(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TunelabError("file_not_found", f"{path} does not exist.", path=path) from None
    except (OSError, ValueError) as err:
        raise TunelabError("invalid_prices_file", f"cannot read prices: {err}", path=path) from None
    if not _valid_shape(data):
        raise TunelabError(
            "invalid_prices_file",
            "a prices file must look like "
            '{"providers": {"openai": {"models": {"MODEL": {"standard": 3.0}}}}}.',
            hint="see tunelab/resources/prices.json for the full shape",
            path=path,
        )
    return data


def _valid_shape(data: object) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("providers", {}), dict):
        return False
    for entry in data.get("providers", {}).values():
        if not isinstance(entry, dict) or not isinstance(entry.get("models", {}), dict):
            return False
        for methods in entry.get("models", {}).values():
            if not isinstance(methods, dict) or not methods:
                return False
            if not all(_is_price(v) for v in methods.values()):
                return False
    return True


def _is_price(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _merge(base: dict, override: dict) -> dict:
    merged = {**base, **{k: v for k, v in override.items() if k != "providers"}}
    providers = {name: dict(entry) for name, entry in base.get("providers", {}).items()}
    for name, entry in override.get("providers", {}).items():
        current = providers.setdefault(name, {})
        models = {m: dict(methods) for m, methods in current.get("models", {}).items()}
        for model, methods in entry.get("models", {}).items():
            models.setdefault(model, {}).update(methods)
        current.update({k: v for k, v in entry.items() if k != "models"})
        current["models"] = models
    merged["providers"] = providers
    return merged
