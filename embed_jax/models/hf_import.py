"""Hugging Face folder (config.json + safetensors, sharded or not) → Flax NNX module with the same numbers.

The machinery is family-agnostic: a family contributes a model builder (embed_jax/models/<family>.py,
`from_hf_config`) and a name table (embed_jax/models/tables/<family>.py, format in tables/__init__.py).

    module, hf_config = load_text_encoder(folder)                 # any supported text encoder
    report = load_weights(module, folder, table)                  # fill an existing module from a folder
    report = assign_weights(module, tensors, table, source=...)   # … or from a {name: array} mapping

Every problem is reported at once: tensors the model lacks (missing), tensors no rule maps or whose target does not
exist (unexpected), and tensors whose shape disagrees with the model (mis-shaped), each by name, in one
`WeightMismatchError`. The model is first built abstractly (`nnx.eval_shape`: shapes only, no random init), so a
1.5B-parameter encoder costs one copy of its weights in memory.

A sentence-transformers folder works too: its `modules.json` names the folder of the Transformer module (often the
folder itself), and its weights may carry a prefix such as "bert." or "model." (see `Table.prefixes`).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open

from embed_jax.models.param_paths import flat_variables, path_name
from embed_jax.models.tables import (CONV_OIHW_TO_HWIO, IDENTITY, RESHAPE, TRANSPOSE, CompiledRule, Rule, Table,
                                     Transform, compile_rules, flax_target, stacked_location)

__all__ = [
    "CONV_OIHW_TO_HWIO", "IDENTITY", "RESHAPE", "TRANSPOSE", "Rule", "Table", "Transform",
    "ImportReport", "WeightMismatchError", "SUPPORTED_MODEL_TYPES",
    "resolve_model_folder", "read_config", "open_checkpoint", "assign_weights", "load_weights",
    "load_text_encoder", "text_encoder_family",
]

# model_type (config.json) → (module with `from_hf_config`, module with `TABLE`).
_TEXT_FAMILIES: dict[str, tuple[str, str]] = {
    "bert": ("embed_jax.models.bert", "embed_jax.models.tables.bert"),
    "roberta": ("embed_jax.models.bert", "embed_jax.models.tables.bert"),
    "xlm-roberta": ("embed_jax.models.bert", "embed_jax.models.tables.bert"),
    "gpt2": ("embed_jax.models.gpt2", "embed_jax.models.tables.gpt2"),
    "mpnet": ("embed_jax.models.mpnet", "embed_jax.models.tables.mpnet"),
    "qwen2": ("embed_jax.models.qwen2", "embed_jax.models.tables.qwen2"),
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_TEXT_FAMILIES))

SENTENCE_TRANSFORMER_MODULE = "sentence_transformers.models.Transformer"


class WeightMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model; `missing`, `unexpected` and `misshaped` list them all."""

    def __init__(self, message: str, *, missing: list[str], unexpected: list[str], misshaped: list[str]):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.misshaped = misshaped


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What an import did: the prefix it stripped, how many tensors it loaded, which it knowingly dropped."""

    source: str
    prefix: str
    loaded: int
    ignored: tuple[str, ...]


# ----------------------------------------------------------------------------------------------------------------
# Reading a folder


def resolve_model_folder(folder: str | Path) -> Path:
    """The folder that holds config.json: `folder` itself, or a sentence-transformers folder's Transformer module."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass a Hugging Face or sentence-transformers model folder")
    if (folder / "config.json").is_file():
        return folder
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        for module in modules:
            if module.get("type") == SENTENCE_TRANSFORMER_MODULE:
                inner = folder / module.get("path", "")
                if (inner / "config.json").is_file():
                    return inner
                raise FileNotFoundError(
                    f"{modules_file} names {inner} as its Transformer module, but {inner / 'config.json'} is missing"
                )
        raise FileNotFoundError(f"{modules_file} has no {SENTENCE_TRANSFORMER_MODULE} module to load")
    raise FileNotFoundError(
        f"{folder} has neither config.json (Hugging Face) nor modules.json (sentence-transformers); "
        "pass the folder written by save_pretrained / SentenceTransformer.save"
    )


def read_config(folder: str | Path) -> dict[str, Any]:
    """config.json of a (resolved) model folder as a dict."""
    path = resolve_model_folder(folder) / "config.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} line {error.lineno}: not valid JSON ({error.msg})") from error


class CheckpointTensors(Mapping[str, np.ndarray]):
    """Lazy {tensor name: numpy array} view over one or several safetensors files (read one tensor at a time)."""

    def __init__(self, file_of_name: dict[str, Path]):
        self._file_of_name = file_of_name
        self._handles: dict[Path, Any] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        path = self._file_of_name[name]
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="numpy")
        return self._handles[path].get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of_name)

    def __len__(self) -> int:
        return len(self._file_of_name)


def open_checkpoint(folder: str | Path) -> CheckpointTensors:
    """The weights of a model folder: model.safetensors, or the shards listed in model.safetensors.index.json."""
    folder = resolve_model_folder(folder)
    index_path = folder / "model.safetensors.index.json"
    single_path = folder / "model.safetensors"
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no 'weight_map' of tensor name → shard file")
        shard_paths = {name: folder / shard for name, shard in weight_map.items()}
        absent = sorted({str(path) for path in shard_paths.values() if not path.is_file()})
        if absent:
            raise FileNotFoundError(f"{index_path} lists shard files that are missing: {', '.join(absent)}")
        return CheckpointTensors(shard_paths)
    if single_path.is_file():
        with safe_open(str(single_path), framework="numpy") as handle:
            return CheckpointTensors({name: single_path for name in handle.keys()})
    others = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    hint = (
        f" It has PyTorch pickles ({', '.join(others)}): re-save with `save_pretrained(folder)` (safetensors is the "
        "default) or `safetensors.torch.save_file`."
        if others
        else ""
    )
    raise FileNotFoundError(f"{folder} has no model.safetensors or model.safetensors.index.json.{hint}")


# ----------------------------------------------------------------------------------------------------------------
# Applying a table


def _choose_prefix(names: list[str], table: Table, rules: list[CompiledRule]) -> str:
    """The checkpoint prefix ("" or one of the table's) under which the most tensor names match a rule."""
    best_prefix, best_count = "", -1
    for prefix in ("",) + tuple(table.prefixes):
        count = sum(1 for name in names if name.startswith(prefix) and flax_target(rules, name[len(prefix):]))
        if count > best_count:
            best_prefix, best_count = prefix, count
    return best_prefix


def _shape(variable: nnx.Variable) -> tuple[int, ...]:
    return tuple(variable.get_value().shape)


def _dtype(variable: nnx.Variable) -> np.dtype:
    return np.dtype(variable.get_value().dtype)


def _is_ignored(name: str, stripped: str, ignored: list[re.Pattern[str]]) -> bool:
    return any(pattern.fullmatch(name) or pattern.fullmatch(stripped) for pattern in ignored)


def assign_weights(
    module: nnx.Module, tensors: Mapping[str, Any], table: Table, *, source: str = "<tensors>"
) -> ImportReport:
    """Fill `module`'s parameters (concrete or from `nnx.eval_shape`) in place from PyTorch-layout `tensors`.

    Raises WeightMismatchError naming every missing, unexpected and mis-shaped tensor; the module is left untouched
    then. Values are cast to each parameter's dtype (the module's param_dtype).
    """
    rules = compile_rules(table)
    ignored_patterns = [re.compile(regex) for regex in table.ignored]
    params = flat_variables(module, separator=".")
    names = sorted(tensors)
    prefix = _choose_prefix(names, table, rules)

    direct: dict[str, np.ndarray] = {}
    stacked: dict[str, np.ndarray] = {}
    # Targets some tensor was meant for (loaded or mis-shaped): (path, None) or (stacked path, layer row).
    claimed: set[tuple[str, int | None]] = set()
    unexpected, misshaped, ignored = [], [], []

    for name in names:
        stripped = name[len(prefix):] if name.startswith(prefix) else name
        target = flax_target(rules, stripped) if name.startswith(prefix) else None
        if target is None:
            (ignored if _is_ignored(name, stripped, ignored_patterns) else unexpected).append(name)
            continue
        path, transform = target
        location = (path, None) if path in params else stacked_location(path, params)
        if location is None or (location[1] is not None and location[1] >= _shape(params[location[0]])[0]):
            unexpected.append(f"{name} → {path} (the model has no such parameter)")
            continue
        param_path, row = location
        full_shape = _shape(params[param_path])
        expected = full_shape if row is None else full_shape[1:]
        hf_array = np.asarray(tensors[name])
        array = transform.to_flax(hf_array, expected)
        if location in claimed:
            unexpected.append(f"{name} → {path} (a second tensor for the same parameter)")
            continue
        claimed.add(location)
        if tuple(array.shape) != expected:
            misshaped.append(f"{name} {tuple(hf_array.shape)} → {path}: model expects {expected}")
            continue
        array = array.astype(_dtype(params[param_path]))
        if row is None:
            direct[param_path] = array
        else:
            if param_path not in stacked:
                stacked[param_path] = np.zeros(full_shape, dtype=_dtype(params[param_path]))
            stacked[param_path][row] = array

    missing = []
    for path, variable in params.items():
        if (path, None) in claimed:
            continue
        rows = [row for row in range(_shape(variable)[0]) if (path, row) in claimed] if _shape(variable) else []
        if not rows:
            missing.append(path)
        else:
            missing.extend(f"{path}[layer {row}]" for row in range(_shape(variable)[0]) if row not in rows)

    if missing or unexpected or misshaped:
        raise WeightMismatchError(
            _mismatch_message(source, table, prefix, missing, unexpected, misshaped),
            missing=missing,
            unexpected=unexpected,
            misshaped=misshaped,
        )

    new_values = {**direct, **stacked}
    flat = [
        (path, variable.replace(jnp.asarray(new_values[path_name(path, separator=".")])))
        for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param))
    ]
    nnx.update(module, nnx.from_flat_state(flat))
    return ImportReport(source=source, prefix=prefix, loaded=len(names) - len(ignored), ignored=tuple(ignored))


def _mismatch_message(
    source: str, table: Table, prefix: str, missing: list[str], unexpected: list[str], misshaped: list[str]
) -> str:
    lines = [
        f"The weights in {source} do not fit the {table.family} model built from its config"
        + (f" (checkpoint prefix {prefix!r} stripped)" if prefix else "")
        + f": {len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped."
    ]
    for title, entries in (
        ("missing (the model needs them, the checkpoint lacks them)", missing),
        ("unexpected (in the checkpoint, not in the model)", unexpected),
        ("mis-shaped", misshaped),
    ):
        if entries:
            lines.append(f"  {title}:")
            lines.extend(f"    {entry}" for entry in entries)
    lines.append(
        "Check that config.json belongs to these weights (sizes, layer count, model_type) and that the folder is "
        "complete; a checkpoint of another architecture needs its own table in embed_jax/models/tables/."
    )
    return "\n".join(lines)


def load_weights(module: nnx.Module, folder: str | Path, table: Table) -> ImportReport:
    """Fill `module` from the safetensors of a Hugging Face / sentence-transformers folder using `table`."""
    folder = resolve_model_folder(folder)
    return assign_weights(module, open_checkpoint(folder), table, source=str(folder))


# ----------------------------------------------------------------------------------------------------------------
# Text encoders


def text_encoder_family(hf_config: Mapping[str, Any], *, source: str = "config.json") -> tuple[Any, Table]:
    """(model module with `from_hf_config`, name table) for a config's model_type, or a ValueError listing the
    supported ones."""
    model_type = hf_config.get("model_type")
    if model_type not in _TEXT_FAMILIES:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not a supported text encoder; supported model_type values: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    model_module_name, table_module_name = _TEXT_FAMILIES[model_type]
    return importlib.import_module(model_module_name), importlib.import_module(table_module_name).TABLE


# The config.json key holding the number of layers, per family (GPT-2 names it n_layer).
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer")
# A layer's tensors in every family's checkpoint: `...layer.{i}.`, `...layers.{i}.`, `h.{i}.`.
_LAYER_TENSOR = re.compile(r"(?:^|\.)(?:layer|layers|h)\.(\d+)\.")


def keep_first_layers(hf_config: Mapping[str, Any], num_layers: int, *, source: str) -> dict[str, Any]:
    """config.json with only the first `num_layers` layers (a smaller student cut from a pretrained encoder, as
    the paper's size/quality trade: docs/RESULTS.md)."""
    key = next((key for key in _LAYER_COUNT_KEYS if key in hf_config), None)
    if key is None:
        raise ValueError(f"{source}: names no layer count ({' / '.join(_LAYER_COUNT_KEYS)}); option num_layers "
                         "cannot cut it")
    total = int(hf_config[key])
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= total:
        raise ValueError(f"option num_layers={num_layers!r}: {source} has {total} layers; choose 1 to {total}")
    return {**hf_config, key: num_layers}


def first_layers_tensors(tensors: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
    """The checkpoint without the tensors of layers ≥ num_layers (read lazily: dropped tensors are never loaded)."""
    return _FilteredTensors(tensors, lambda name: (match := _LAYER_TENSOR.search(name)) is None
                            or int(match.group(1)) < num_layers)


class _FilteredTensors(Mapping[str, Any]):
    def __init__(self, tensors: Mapping[str, Any], keep: Any):
        self._tensors, self._names = tensors, [name for name in tensors if keep(name)]
        self._kept = frozenset(self._names)

    def __getitem__(self, name: str) -> Any:
        if name not in self._kept:
            raise KeyError(name)
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def load_text_encoder(
    folder: str | Path, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, **options: Any
) -> tuple[nnx.Module, dict[str, Any]]:
    """Build the text encoder a Hugging Face / sentence-transformers folder describes and load its weights.

    dtype: compute dtype (bf16 on TPU); param_dtype: storage dtype of the parameters (fp32 for training).
    options: family options such as scan=True, remat=True, truncate_long_inputs=True, causal=False (Qwen2, GPT-2);
        unknown ones raise a ValueError listing the valid ones. num_layers=N keeps the first N layers only.
    Returns (module, the config.json dict — with the reduced layer count when num_layers is given).
    """
    model_folder = resolve_model_folder(folder)
    hf_config = read_config(model_folder)
    config_source = str(model_folder / "config.json")
    family, table = text_encoder_family(hf_config, source=config_source)
    num_layers = options.pop("num_layers", None)
    if num_layers is not None:
        hf_config = keep_first_layers(hf_config, num_layers, source=config_source)
    abstract = nnx.eval_shape(
        lambda: family.from_hf_config(
            hf_config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0), source=config_source, **options
        )
    )
    tensors: Mapping[str, Any] = open_checkpoint(model_folder)
    if num_layers is not None:
        tensors = first_layers_tensors(tensors, num_layers)
    assign_weights(abstract, tensors, table, source=str(model_folder))
    return abstract, hf_config
