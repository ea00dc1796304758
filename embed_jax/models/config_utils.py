"""Turning a Hugging Face config.json dict plus caller options into a family's frozen config dataclass."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from embed_jax.models.layers import check_remat


def build_config(
    config_class: type,
    hf_config: Mapping[str, Any],
    architecture_keys: tuple[str, ...],
    option_names: tuple[str, ...],
    options: Mapping[str, Any],
    *,
    source: str,
    extra: Mapping[str, Any] | None = None,
    renamed: Mapping[str, str] | None = None,
) -> Any:
    """config_class(**architecture from hf_config, **extra, **options), with errors that name the key.

    renamed: {field name: config.json key} where the two differ (GPT-2's n_embd is our hidden_size, …).
    A key absent from config.json falls back to the dataclass default; a required one raises.
    """
    unknown = sorted(set(options) - set(option_names))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {config_class.__name__}; valid options: {', '.join(option_names)}"
        )
    if "remat" in options:
        check_remat(options["remat"])
    renamed = renamed or {}
    defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
    values: dict[str, Any] = {}
    for field in architecture_keys:
        key = renamed.get(field, field)
        if hf_config.get(key) is not None:
            values[field] = hf_config[key]
        elif defaults[field] is dataclasses.MISSING:
            raise ValueError(f"{source} lacks the key {key!r}, which {config_class.__name__} needs")
    return config_class(**values, **(extra or {}), **options)
