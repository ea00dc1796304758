"""The declarative format of the Hugging Face ↔ Flax name tables, the transforms they use, and how a name is matched.

A family's table (embed_jax/models/tables/<family>.py) is a `Table`: a tuple of rules

    (hf_regex, flax_path_template, transform)

`hf_regex` must match a whole Hugging Face tensor name (after the checkpoint prefix, e.g. "bert.", is removed);
`flax_path_template` is the dotted path of the Flax parameter, formatted with the regex's groups (`{0}`, `{1}`, …
positional, or `{name}` for named groups); `transform` turns the PyTorch array into the Flax one (`to_flax`) and back
(`to_hf`), so the same table serves import and export.

Stacked (scanned) layers need no special rules: a rule names the per-layer path, e.g. `encoder.layer.{0}.….kernel`,
and the importer writes it into row {0} of the stacked parameter `encoder.layer.….kernel` when the model was built
with `scan=True` (see embed_jax/models/hf_import.py; `stacked_location` finds the row).

The importer (embed_jax/models/hf_import.py) and the exporters (text encoder, vision tower; docs/export.md) read a
table the same way:

    rules = compile_rules(table)
    flax_path, transform = flax_target(rules, hf_name)     # None when no rule matches
    location = stacked_location(flax_path, params)         # a scanned model's (stacked path, layer row), or None
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Container, Sequence

import numpy as np

# (hf array, flax shape) → flax array, and (flax array, hf shape) → hf array.
ArrayMap = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Transform:
    """How one tensor changes between PyTorch and Flax layouts (both directions)."""

    name: str
    to_flax: ArrayMap
    to_hf: ArrayMap


def _same(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return x


def _transpose(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(x.T)


def _reshape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return x.reshape(shape) if x.size == int(np.prod(shape)) else x  # wrong sizes are reported, not crashed on


def _oihw_to_hwio(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (2, 3, 1, 0)))


def _hwio_to_oihw(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)))


# Same layout in both frameworks: embeddings, norms, biases, GPT-2's Conv1D weights (already (in, out)).
IDENTITY = Transform("identity", _same, _same)
# torch.nn.Linear stores (out, in); flax's Linear kernel is (in, out).
TRANSPOSE = Transform("transpose", _transpose, _transpose)
# Same elements, other shape (e.g. a fused projection split per head); the target shape comes from the model.
RESHAPE = Transform("reshape", _reshape, _reshape)
# torch.nn.Conv2d weight (out, in, kh, kw) → flax Conv kernel (kh, kw, in, out).
CONV_OIHW_TO_HWIO = Transform("conv_oihw_to_hwio", _oihw_to_hwio, _hwio_to_oihw)

Rule = tuple[str, str, Transform]


@dataclasses.dataclass(frozen=True)
class Table:
    """One model family's name table.

    family: the name used in messages ("bert").
    rules: (hf_regex, flax_path_template, transform) triples; the first rule whose regex matches wins.
    ignored: regexes of Hugging Face tensors that are knowingly dropped (buffers such as `position_ids`, pooler and
        language-model heads that an embedding encoder does not use). They are listed in the import report.
    prefixes: prefixes a checkpoint may put before every name (a `BertForMaskedLM` saves `bert.…`, a
        `Qwen2ForCausalLM` saves `model.…`); unprefixed names are always accepted.
    """

    family: str
    rules: tuple[Rule, ...]
    ignored: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()


# A rule with its regex compiled: (pattern, flax_path_template, transform).
CompiledRule = tuple[re.Pattern[str], str, Transform]


def compile_rules(table: Table) -> list[CompiledRule]:
    """The table's rules with their regexes compiled, in the table's order (the first match wins)."""
    return [(re.compile(regex), template, transform) for regex, template, transform in table.rules]


def flax_target(rules: Sequence[CompiledRule], hf_name: str) -> tuple[str, Transform] | None:
    """The dotted Flax path and the transform of the first rule whose regex matches the whole `hf_name` (checkpoint
    prefix already removed), or None when no rule does."""
    for pattern, template, transform in rules:
        match = pattern.fullmatch(hf_name)
        if match:
            return template.format(*match.groups(), **match.groupdict()), transform
    return None


def stacked_location(flax_path: str, params: Container[str]) -> tuple[str, int] | None:
    """Where a per-layer path lives in a scanned model: 'encoder.layer.3.x.kernel' → ('encoder.layer.x.kernel', 3)
    when `params` (dotted parameter paths) holds the stacked path; None when it holds no such stacked parameter."""
    parts = flax_path.split(".")
    for position, part in enumerate(parts):
        if part.isdigit():
            stacked_path = ".".join(parts[:position] + parts[position + 1:])
            if stacked_path in params:
                return stacked_path, int(part)
    return None
