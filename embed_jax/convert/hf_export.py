"""Student ↔ sentence-transformers folder: the backbone as a standard Hugging Face model, one Dense folder per head.

The folder (stella's layout; loads with `SentenceTransformer(folder)` and no custom code):

    config.json, model.safetensors, tokenizer files   the text encoder as its own family's Hugging Face model
    1_Pooling/config.json                              the student's pooling (mean / cls / last token)
    2_Dense_{dim}/{config.json, model.safetensors}     one per head: Linear with bias, identity activation
    modules.json                                       Transformer → Pooling → 2_Dense_{default} → Normalize
    sentence_bert_config.json, config_sentence_transformers.json

The Flax heads L2-normalise their Linear output in fp32 (embed_jax/models/heads.py, eps 1e-12 as
torch.nn.functional.normalize), so the last module is sentence-transformers' Normalize: the folder's vectors are the
Flax model's. The folder always holds fp32 weights (a bf16-stored student is widened losslessly).

Export is table-driven: the Hugging Face tensor names come from the family's own PyTorch model class (built on the
meta device from the student's config.json: no memory, no weights), and each name goes through the same name table
the importer uses (embed_jax/models/tables/<family>.py), in reverse (`Transform.to_hf`). A family the importer knows
is exportable as soon as transformers has its base model class, so a new table needs no export code.

    tensors, report = backbone_tensors(student, source=init_folder)  # {HF name: fp32 array}
    student = load_exported(folder)                                  # the reverse: folder → Student (text path)
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from embed_jax.models import hf_import, param_paths
from embed_jax.models.heads import head_name
from embed_jax.models.st_pooling import pooling_from_folder
from embed_jax.models.student import Student
from embed_jax.models.tables import compile_rules, flax_target, stacked_location

EXPORT_FILE = "embed_jax_export.json"
FORMAT_VERSION = 1
POOLING_FOLDER = "1_Pooling"
NORMALIZE_FOLDER = "3_Normalize"
WEIGHTS_FILE = "model.safetensors"
IDENTITY_ACTIVATION = "torch.nn.modules.linear.Identity"
ST_MODULE = "sentence_transformers.models."

# embed_jax pooling → the one sentence-transformers flag that is true (legacy key names: every release reads them,
# and embed_jax.models.st_pooling.pooling_from_folder reads them back).
POOLING_FLAGS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                 "first": "pooling_mode_cls_token", "last": "pooling_mode_lasttoken"}
ALL_POOLING_FLAGS = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                     "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")

# Parameters of the image path: the text export leaves them to embed_jax.convert.hf_vision (docs/vision_student.md).
VISION_PREFIXES = ("vision.", "projection_pool.", "added_embeddings.")
HEAD_PARAM = re.compile(r"heads\.dense\.dense_(\d+)\.(kernel|bias)")


class ExportError(ValueError):
    """The student cannot be written as a standard folder; the message names the part and what to do."""


def dense_folder(dim: int) -> str:
    """The folder of the head with output dimension `dim` (stella's convention)."""
    return f"2_Dense_{dim}"


# ---------------------------------------------------------------------------------------------------- parameters


def flat_params(module: nnx.Module) -> dict[str, np.ndarray]:
    """{dotted path: host array} of every parameter: the paths the name tables write."""
    return param_paths.flat_params(module, separator=".")


def split_params(params: Mapping[str, np.ndarray]) -> tuple[dict, dict, dict]:
    """(text encoder params without the 'text_encoder.' prefix, head params, image-path params); raises naming every
    parameter that belongs to none of them (a part this exporter does not know)."""
    encoder, heads, vision, unknown = {}, {}, {}, []
    for path, array in params.items():
        if path.startswith("text_encoder."):
            encoder[path.removeprefix("text_encoder.")] = array
        elif HEAD_PARAM.fullmatch(path):
            heads[path] = array
        elif path.startswith(VISION_PREFIXES):
            vision[path] = array
        else:
            unknown.append(path)
    if unknown:
        raise ExportError(
            f"the student has parameters the exporter does not know: {', '.join(sorted(unknown))}. It writes the text "
            "encoder, FC heads (heads.dense.dense_{dim}.kernel/bias, one Linear each) and, through "
            "embed_jax.convert.hf_vision, the image path; a new kind of head needs its own export in "
            "embed_jax/convert/hf_export.py.")
    return encoder, heads, vision


def head_tensors(head_params: Mapping[str, np.ndarray], dims: tuple[int, ...]) -> dict[int, dict[str, np.ndarray]]:
    """{dim: {'linear.weight': (dim, in) fp32, 'linear.bias': (dim,) fp32}} — torch.nn.Linear's layout."""
    tensors = {}
    for dim in dims:
        kernel = head_params.get(f"heads.dense.{head_name(dim)}.kernel")
        bias = head_params.get(f"heads.dense.{head_name(dim)}.bias")
        if kernel is None or bias is None:
            raise ExportError(f"head {head_name(dim)} lacks its kernel or bias: the exporter writes Linear heads with "
                              "bias only")
        tensors[dim] = {"linear.weight": np.ascontiguousarray(kernel.astype(np.float32).T),
                        "linear.bias": bias.astype(np.float32)}
    return tensors


# ---------------------------------------------------------------------------------------------------- backbone


def check_text_options(text_options: Mapping[str, Any]) -> None:
    """Options that change the function beyond what the family's Hugging Face model computes are refused."""
    if text_options.get("causal", True) is False:
        raise ExportError(
            "student config key text_options.causal=False: a bidirectional decoder is not what the standard Hugging "
            "Face model of this family computes (it is causal), so the exported folder would give other vectors. "
            "Export is supported for causal decoders and for encoders.")


def hf_model_class(model_type: str, *, source: str) -> str:
    """The Hugging Face base model class of a model_type (e.g. 'BertModel'), or an ExportError naming it."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    if model_type not in hf_import.SUPPORTED_MODEL_TYPES or model_type not in MODEL_MAPPING_NAMES:
        raise ExportError(
            f"{source}: text encoder model_type {model_type!r} has no exporter; supported model_type values: "
            f"{', '.join(sorted(set(hf_import.SUPPORTED_MODEL_TYPES) & set(MODEL_MAPPING_NAMES)))} (a family needs a "
            "name table in embed_jax/models/tables/ and a transformers base model class)")
    return MODEL_MAPPING_NAMES[model_type]


def hf_config(text_encoder_config: Mapping[str, Any]) -> Any:
    """The transformers config object of the student's encoder, saved as a base model in fp32."""
    from transformers import CONFIG_MAPPING

    model_type = text_encoder_config["model_type"]
    settings = {key: value for key, value in text_encoder_config.items()
                if key not in ("_name_or_path", "architectures", "torch_dtype", "dtype", "transformers_version")}
    config = CONFIG_MAPPING[model_type].from_dict(settings)
    config.architectures = [hf_model_class(model_type, source="student config key text_encoder")]
    config.dtype = "float32"
    return config


def hf_reference_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of the family's base model as transformers saves it (built on the meta device)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@dataclasses.dataclass(frozen=True)
class BackboneReport:
    """What `backbone_tensors` wrote: tensors mapped from the student, copied from the source, left to HF init."""

    mapped: int
    copied_from_source: tuple[str, ...]
    left_out: tuple[str, ...]


def _source_tensor(source: Mapping[str, Any] | None, name: str, prefixes: tuple[str, ...],
                   shape: tuple[int, ...]) -> np.ndarray | None:
    if source is None:
        return None
    for prefix in ("",) + prefixes:
        if prefix + name in source:
            array = np.asarray(source[prefix + name])
            return array.astype(np.float32) if tuple(array.shape) == shape else None
    return None


def backbone_tensors(
    encoder_params: Mapping[str, np.ndarray], text_encoder_config: Mapping[str, Any], *,
    source: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], BackboneReport]:
    """The text encoder's parameters as the Hugging Face base model's fp32 tensors, by the family's name table.

    Tensors the Hugging Face model has but the student does not use (the table's `ignored`, e.g. BERT's pooler)
    are copied unchanged from `source` (the folder the student started from) when it has them, else left out for
    transformers to initialise. Raises an ExportError naming every tensor the table cannot fill and every student
    parameter no tensor takes.
    """
    config = hf_config(text_encoder_config)
    _, table = hf_import.text_encoder_family(text_encoder_config, source="student config key text_encoder")
    rules = compile_rules(table)
    ignored = [re.compile(regex) for regex in table.ignored]
    tensors: dict[str, np.ndarray] = {}
    claimed: set[tuple[str, int | None]] = set()
    unmapped, misshaped, copied, left_out = [], [], [], []
    for name, shape in hf_reference_shapes(config).items():
        target = flax_target(rules, name)
        if target is None:
            if not any(pattern.fullmatch(name) for pattern in ignored):
                unmapped.append(f"{name} (no rule of the {table.family} table matches)")
            elif (array := _source_tensor(source, name, table.prefixes, shape)) is not None:
                tensors[name] = array
                copied.append(name)
            else:
                left_out.append(name)
            continue
        path, transform = target
        location = (path, None) if path in encoder_params else stacked_location(path, encoder_params)
        if location is None:
            unmapped.append(f"{name} → {path} (the student has no such parameter)")
            continue
        stored = encoder_params[location[0]]
        array = stored if location[1] is None else stored[location[1]]
        hf_array = transform.to_hf(np.asarray(array, dtype=np.float32), shape)
        if tuple(hf_array.shape) != shape:
            misshaped.append(f"{path} {tuple(array.shape)} → {name}: Hugging Face expects {shape}")
            continue
        tensors[name] = np.ascontiguousarray(hf_array)
        claimed.add(location)
    unclaimed = [path for path, array in encoder_params.items()
                 if (path, None) not in claimed and not all((path, row) in claimed for row in range(array.shape[0]))]
    if unmapped or misshaped or unclaimed:
        lines = [f"the student's {table.family} encoder does not fit the Hugging Face {config.architectures[0]} "
                 "built from its config:"]
        for title, entries in (("Hugging Face tensors with no student parameter", unmapped),
                               ("mis-shaped", misshaped), ("student parameters no tensor takes", unclaimed)):
            if entries:
                lines += [f"  {title}:"] + [f"    {entry}" for entry in entries]
        lines.append(f"The name table embed_jax/models/tables/{table.family}.py must cover both directions.")
        raise ExportError("\n".join(lines))
    return tensors, BackboneReport(mapped=len(claimed), copied_from_source=tuple(copied), left_out=tuple(left_out))


# ---------------------------------------------------------------------------------------------------- folder pieces


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_safetensors(tensors: Mapping[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_file(dict(tensors), str(path), metadata={"format": "pt"})
    except Exception as error:  # safetensors' Rust writer reports an OS error as SafetensorError("... (os error N)")
        code = re.search(r"\(os error (\d+)\)", str(error))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from error


def write_backbone(folder: Path, tensors: Mapping[str, np.ndarray], text_encoder_config: Mapping[str, Any]) -> None:
    """config.json (the family's own, fp32, base model class) and model.safetensors."""
    hf_config(text_encoder_config).save_pretrained(str(folder))
    _save_safetensors(tensors, folder / WEIGHTS_FILE)


def pooling_config(pooling_method: str, hidden_size: int) -> dict[str, Any]:
    if pooling_method not in POOLING_FLAGS:
        raise ExportError(f"student pooling {pooling_method!r} has no sentence-transformers equivalent; exportable: "
                          f"{sorted(POOLING_FLAGS)}")
    flags = {flag: flag == POOLING_FLAGS[pooling_method] for flag in ALL_POOLING_FLAGS}
    return {"word_embedding_dimension": hidden_size, **flags, "include_prompt": True}


def write_heads(folder: Path, heads: Mapping[int, Mapping[str, np.ndarray]]) -> list[str]:
    """One 2_Dense_{dim} folder per head; returns the folder names."""
    names = []
    for dim, tensors in heads.items():
        out_features, in_features = tensors["linear.weight"].shape
        _write_json(folder / dense_folder(dim) / "config.json",
                    {"in_features": int(in_features), "out_features": int(out_features), "bias": True,
                     "activation_function": IDENTITY_ACTIVATION})
        _save_safetensors(tensors, folder / dense_folder(dim) / WEIGHTS_FILE)
        names.append(dense_folder(dim))
    return names


def modules_list(default_dim: int) -> list[dict[str, Any]]:
    """modules.json: Transformer → Pooling → the default head → Normalize (the Flax heads' L2 normalisation)."""
    parts = [("", "Transformer"), (POOLING_FOLDER, "Pooling"), (dense_folder(default_dim), "Dense"),
             (NORMALIZE_FOLDER, "Normalize")]
    return [{"idx": index, "name": str(index), "path": path, "type": ST_MODULE + kind}
            for index, (path, kind) in enumerate(parts)]


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_sentence_transformers_files(
    folder: Path, *, pooling_method: str, hidden_size: int, default_dim: int, max_seq_length: int,
    prompts: Mapping[str, str], truncate_dim: int | None = None,
) -> None:
    """The module configs and config_sentence_transformers.json (truncate_dim: a Matryoshka prefix as the default,
    which sentence-transformers 3+ reads from there)."""
    _write_json(folder / POOLING_FOLDER / "config.json", pooling_config(pooling_method, hidden_size))
    _write_json(folder / "modules.json", modules_list(default_dim))
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": int(max_seq_length), "do_lower_case": False})
    _write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": _version("sentence-transformers"),
                        "transformers": _version("transformers"), "pytorch": _version("torch")},
        "model_type": "SentenceTransformer",
        "prompts": dict(prompts),
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        **({"truncate_dim": int(truncate_dim)} if truncate_dim else {}),
    })


# ---------------------------------------------------------------------------------------------------- reading back


def _dense_dims(folder: Path) -> list[int]:
    return sorted((int(match.group(1)) for path in folder.iterdir()
                   if (match := re.fullmatch(r"2_Dense_(\d+)", path.name)) and path.is_dir()), reverse=True)


def read_head(folder: Path, dim: int, in_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (in, dim), bias (dim,)) of an exported 2_Dense_{dim} folder, checked against what the Flax head is."""
    from safetensors.numpy import load_file

    head_folder = folder / dense_folder(dim)
    config_path = head_folder / "config.json"
    if not config_path.is_file() or not (head_folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{head_folder} lacks config.json or {WEIGHTS_FILE}: not a complete Dense head")
    config = json.loads(config_path.read_text())
    expected = {"in_features": in_features, "out_features": dim, "bias": True,
                "activation_function": IDENTITY_ACTIVATION}
    different = {key: config.get(key) for key, value in expected.items() if config.get(key, value) != value}
    if different:
        raise ExportError(f"{config_path}: {different} — an embed_jax head is a Linear with bias and identity "
                          f"activation, {in_features} → {dim}")
    tensors = load_file(str(head_folder / WEIGHTS_FILE))
    weight, bias = tensors.get("linear.weight"), tensors.get("linear.bias")
    if weight is None or bias is None or weight.shape != (dim, in_features) or bias.shape != (dim,):
        found = {name: tuple(array.shape) for name, array in tensors.items()}
        raise ExportError(f"{head_folder / WEIGHTS_FILE}: expected linear.weight {(dim, in_features)} and "
                          f"linear.bias {(dim,)}, found {found}")
    return np.ascontiguousarray(weight.T), bias


def load_exported(folder: str | Path, *, rngs: nnx.Rngs | None = None) -> Any:
    """An exported folder → the Student's text path (encoder, pooling, every 2_Dense_* head), in fp32.

    The student's settings come from embed_jax_export.json; a folder without it (written by other tools in the same
    layout) is read from modules.json / 1_Pooling and its 2_Dense_* folders (the largest head taken as FC1).
    """

    folder = Path(folder)
    export_file = folder / EXPORT_FILE
    if export_file.is_file():
        student_config = json.loads(export_file.read_text())["student_config"]
        if student_config is None:  # e.g. heads added to a frozen model (embed_jax/convert/shrink_folder.py)
            raise ValueError(f"{export_file} describes no embed_jax Student (student_config is null): this folder "
                             "is a sentence-transformers model with heads; load it with SentenceTransformer(folder)")
        heads = dict(student_config["heads"])
        pooling_method = student_config["pooling"]
        text_options = dict(student_config.get("text_options") or {})
    else:
        dims = _dense_dims(folder)
        if not dims:
            raise FileNotFoundError(f"{folder} has neither {EXPORT_FILE} nor 2_Dense_* head folders: not an exported "
                                    "student (write one with python -m embed_jax.convert.hf)")
        heads = {"teacher_dim": dims[0], "reduction_dims": dims[1:]}
        pooling_method = pooling_from_folder(folder)
        text_options = {}
    student = Student.from_pretrained(folder, heads=heads, pooling_method=pooling_method, text_options=text_options,
                                      rngs=rngs or nnx.Rngs(0))
    for dim in student.heads.dims:
        kernel, bias = read_head(folder, dim, student.hidden_size)
        dense = student.heads.dense[head_name(dim)]
        dense.kernel[...] = kernel.astype(dense.kernel[...].dtype)
        dense.bias[...] = bias.astype(dense.bias[...].dtype)
    return student
