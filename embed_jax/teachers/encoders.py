"""Teachers in PyTorch: a sentence-transformers folder, or a Hugging Face folder with a pooling spec.

* `pooling="auto"` on a sentence-transformers folder (one with modules.json) runs the folder's own module pipeline
  (Transformer → Pooling → optional Dense/Normalize) through `SentenceTransformer.preprocess` and its forward,
  exactly what `SentenceTransformer.encode` computes, prompt handling included.
* `pooling="mean"` or `"cls"` on any Hugging Face folder (config.json + weights + tokenizer) runs `AutoModel` and
  pools its last hidden states: masked mean over real tokens, or the first token.

A prompt is prepended to each text for this teacher only (docs/method.md §2: teachers may want an instruction prompt):
given as text (`prompt`) or by name from the folder's config_sentence_transformers.json (`prompt_name`). A
sentence-transformers teacher's Dense module can be swapped for another head folder it ships (`dense_head`, e.g.
stella_en_1.5B_v5's `2_Dense_8192`).

Device and precision are per teacher (docs/data.md, "Device and precision"): `device` is cpu, cuda, cuda:N or auto
(cuda:LOCAL_RANK when torch sees a GPU, else cpu); `dtype` is the weights' dtype (float32, bfloat16, float16), and
`autocast=True` keeps float32 weights and runs the forward under `torch.autocast` in `dtype`. Whatever the dtype,
vectors leave a teacher as float32. A folder that ships its own modelling code (config.json `auto_map`) runs only
with `trust_remote_code=True`.

Teachers return raw vectors; normalisation and concatenation are `targets.concatenated_target`'s job.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from embed_jax import assets
from embed_jax.data import tokenizer_folder
from embed_jax.teachers.batching import plan_length_batches

POOLINGS = ("auto", "mean", "cls")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_FORMS = "cpu, cuda, cuda:N or auto"
PROMPTS_FILE = "config_sentence_transformers.json"
# Files that describe a model but do not change its vectors.
_NOT_FINGERPRINTED = ("README.md", "desktop.ini")
# Above this, a tokenizer's model_max_length is Hugging Face's "no limit" placeholder, not a real window.
_NO_LIMIT = 1_000_000


class TeacherConfigError(ValueError):
    """A teacher's config entry is wrong; the message names the key (`teachers.<name>.<field>`)."""


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    name: str
    path: str
    pooling: str = "auto"
    prompt: str = ""
    max_seq_length: int = 0  # 0: the model's own window
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    dtype: str = "float32"  # the weights' dtype, or with autocast the forward's
    autocast: bool = False  # float32 weights, forward under torch.autocast(dtype)
    trust_remote_code: bool = False
    prompt_name: str = ""  # a prompt of the folder's config_sentence_transformers.json
    dense_head: str = ""  # sentence-transformers: a Dense folder that replaces the folder's Dense module
    append_eos: bool = False  # end every text with the tokenizer's EOS token (NV-Embed-v2's card does)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and in what precision a teacher runs: torch device, weights dtype, autocast dtype (None: off)."""
    device: torch.device
    weights_dtype: torch.dtype
    autocast_dtype: torch.dtype | None

    @property
    def device_kind(self) -> str:
        return self.device.type

    def forward_context(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def resolve_device(spec: TeacherSpec, local_rank: int | None = None) -> torch.device:
    """`spec.device` as a torch device; `auto` is cuda:LOCAL_RANK (torchrun's) when torch sees a GPU, else cpu."""
    key = f"teachers.{spec.name}.device"
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    device = spec.device.strip()
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or (device.startswith("cuda:") and device.removeprefix("cuda:").isdigit()):
        if not torch.cuda.is_available():
            raise TeacherConfigError(f"{key}={spec.device!r}, but torch sees no GPU here (torch {torch.__version__}, "
                                     f"CUDA {'built' if torch.backends.cuda.is_built() else 'not built'}); set "
                                     f"--config.{key}=cpu, or auto to use a GPU where there is one.")
        index = local_rank if device == "cuda" else int(device.removeprefix("cuda:"))
        if index >= torch.cuda.device_count():
            raise TeacherConfigError(f"{key}={spec.device!r}: GPU {index} asked for, torch sees "
                                     f"{torch.cuda.device_count()}; use cuda:0 … cuda:{torch.cuda.device_count() - 1}.")
        return torch.device(f"cuda:{index}")
    raise TeacherConfigError(f"{key}={spec.device!r}; choose one of {DEVICE_FORMS}.")


def resolve_placement(spec: TeacherSpec, local_rank: int | None = None) -> Placement:
    key = f"teachers.{spec.name}"
    if spec.dtype not in DTYPES:
        raise TeacherConfigError(f"{key}.dtype={spec.dtype!r}; choose one of {', '.join(DTYPES)}.")
    if spec.autocast and spec.dtype == "float32":
        raise TeacherConfigError(f"{key}.autocast=True with dtype float32 changes nothing; set {key}.dtype=bfloat16 "
                                 f"(or float16), or {key}.autocast=False.")
    device = resolve_device(spec, local_rank)
    if spec.autocast:
        return Placement(device, torch.float32, DTYPES[spec.dtype])
    return Placement(device, DTYPES[spec.dtype], None)


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file that shapes the vectors (weights, configs, tokenizer), by relative path."""
    digest = hashlib.sha256()
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        if file.name in _NOT_FINGERPRINTED or any(part.startswith(".") for part in file.relative_to(folder).parts):
            continue
        digest.update(str(file.relative_to(folder)).encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(16 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class Teacher:
    """A loaded teacher: `token_lengths` for batching, `encode_batch` for raw vectors (float32, (n, dim))."""

    spec: TeacherSpec
    folder: Path
    placement: Placement
    prompt: str  # the text prepended to each text: spec.prompt, or the folder's prompt named spec.prompt_name
    dim: int
    max_seq_length: int

    def ended(self, texts: Sequence[str]) -> list[str]:
        """The texts as the teacher reads them after its prompt: with the EOS token appended if asked."""
        if not self.spec.append_eos:
            return list(texts)
        eos = self.tokenizer.eos_token
        if not eos:
            raise TeacherConfigError(f"teachers.{self.spec.name}.append_eos=True, but the tokenizer of {self.folder} "
                                     f"defines no eos_token; set teachers.{self.spec.name}.append_eos=False.")
        return [text + eos for text in texts]

    def prompted(self, texts: Sequence[str]) -> list[str]:
        texts = self.ended(texts)
        return [self.prompt + text for text in texts] if self.prompt else texts

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer(self.prompted(texts), truncation=True, max_length=self.max_seq_length)
        return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


def _to_device(features: dict, device: torch.device) -> dict:
    return {name: value.to(device) if torch.is_tensor(value) else value for name, value in features.items()}


class SentenceTransformerTeacher(Teacher):
    def __init__(self, spec: TeacherSpec, folder: Path, placement: Placement, prompt: str):
        from sentence_transformers import SentenceTransformer

        self.spec, self.folder, self.placement, self.prompt = spec, folder, placement, prompt
        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True,
                                         trust_remote_code=spec.trust_remote_code,
                                         model_kwargs={"torch_dtype": placement.weights_dtype})
        if spec.dense_head:
            replace_dense_module(self.model, folder, spec)
        # Every module (Dense heads too) in the weights' dtype, then onto the device.
        self.model.to(dtype=placement.weights_dtype).to(placement.device).eval()
        self.tokenizer = self.model.tokenizer
        check_vocabulary(spec, folder, self.tokenizer)
        transformer = next((module.auto_model for module in self.model if hasattr(module, "auto_model")), None)
        if spec.max_seq_length:
            check_window(spec, folder, position_limit(transformer) if transformer is not None else None)
            self.model.max_seq_length = spec.max_seq_length
        self.max_seq_length = int(self.model.max_seq_length)
        self.dim = int(self.model.get_embedding_dimension())

    @torch.inference_mode()
    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        features = self.model.preprocess(self.ended(texts), prompt=self.prompt or None)
        features = _to_device(features, self.placement.device)
        with self.placement.forward_context():
            vectors = self.model(features)["sentence_embedding"]
        return vectors.float().cpu().numpy()


def replace_dense_module(model, folder: Path, spec: TeacherSpec) -> None:
    """Swap the folder's one Dense module for the head in `folder/spec.dense_head` (e.g. stella's 2_Dense_8192)."""
    from sentence_transformers.base.modules.dense import Dense

    key = f"teachers.{spec.name}.dense_head"
    head = folder / spec.dense_head
    if not (head / "config.json").is_file():
        heads = sorted(path.name for path in folder.iterdir() if path.is_dir() and "Dense" in path.name)
        raise TeacherConfigError(f"{key}={spec.dense_head!r}: {head} is not a Dense folder (no config.json); the "
                                 f"folder's Dense heads are {', '.join(heads) or 'none'}.")
    dense_names = [name for name, module in model.named_children() if isinstance(module, Dense)]
    if len(dense_names) != 1:
        raise TeacherConfigError(f"{key}: {folder / 'modules.json'} lists {len(dense_names)} Dense modules; a head "
                                 f"can replace exactly one. Clear {key}, or edit modules.json in a copy.")
    model._modules[dense_names[0]] = Dense.load(str(head))


class PooledHuggingFaceTeacher(Teacher):
    def __init__(self, spec: TeacherSpec, folder: Path, placement: Placement, prompt: str):
        from transformers import AutoModel, AutoTokenizer

        self.spec, self.folder, self.placement, self.prompt = spec, folder, placement, prompt
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                       trust_remote_code=spec.trust_remote_code)
        check_vocabulary(spec, folder, self.tokenizer)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=placement.weights_dtype,
                                               trust_remote_code=spec.trust_remote_code).to(placement.device).eval()
        check_window(spec, folder, position_limit(self.model))
        self.max_seq_length = spec.max_seq_length or self._model_window()
        self.dim = int(self.model.config.hidden_size)

    def _model_window(self) -> int:
        windows = [self.tokenizer.model_max_length, position_limit(self.model)]
        windows = [int(window) for window in windows if window and window < _NO_LIMIT]
        if not windows:
            raise TeacherConfigError(f"teachers.{self.spec.name}.max_seq_length: {self.folder} states no input "
                                     f"window; set it, e.g. --config.teachers.{self.spec.name}.max_seq_length=512.")
        return min(windows)

    @torch.inference_mode()
    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        inputs = self.tokenizer(self.prompted(texts), truncation=True, max_length=self.max_seq_length,
                                padding=True, return_tensors="pt").to(self.placement.device)
        with self.placement.forward_context():
            hidden = self.model(**inputs).last_hidden_state
        hidden = hidden.float()  # pooled in float32 whatever the model's dtype
        if self.spec.pooling == "cls":
            return hidden[:, 0].cpu().numpy()
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).cpu().numpy()


def position_limit(model) -> int | None:
    """The most tokens a Hugging Face model reads in one text: its position table (`max_position_embeddings`), less
    the offset of models that count positions from padding_idx + 1 (RoBERTa, MPNet, XLM-R: measured, a RoBERTa of
    130 positions reads 128 tokens and fails at 129 with an index error). None when the config states no table."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if not positions:
        return None
    padding_index = getattr(getattr(model, "embeddings", None), "padding_idx", None)
    return int(positions) - (int(padding_index) + 1 if padding_index is not None else 0)


def check_window(spec: TeacherSpec, folder: Path, limit: int | None) -> None:
    """A configured window beyond the model's position table would fail in the first long batch (a torch size
    mismatch); refuse it before any text is encoded."""
    if limit is not None and spec.max_seq_length > limit:
        key = f"teachers.{spec.name}.max_seq_length"
        raise TeacherConfigError(f"{key}={spec.max_seq_length}: the model in {folder} reads at most {limit} tokens "
                                 f"(its position table); set --config.{key}={limit} or less (0: the model's own "
                                 f"window).")


def tokenizer_folder_of(folder: Path) -> Path:
    """Where the teacher's tokenizer files are: a sentence-transformers folder's Transformer module, else the folder."""
    if (folder / "modules.json").is_file():
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        for module in modules:
            if str(module.get("type", "")).endswith("Transformer"):
                return folder / module.get("path", "")
    return folder


def check_vocabulary(spec: TeacherSpec, folder: Path, tokenizer) -> None:
    tokenizer_folder.require_real_vocabulary(len(tokenizer), len(set(tokenizer.all_special_ids)), folder,
                                             f"teachers.{spec.name}.path")


def remote_code_configs(folder: Path) -> dict[str, dict]:
    """{config.json path: its auto_map} for the folder's and its modules' configs that name their own code."""
    configs = [folder / "config.json"]
    if (folder / "modules.json").is_file():
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        configs += [folder / module["path"] / "config.json" for module in modules if module.get("path")]
    found = {}
    for path in configs:
        if path.is_file():
            auto_map = json.loads(path.read_text(encoding="utf-8")).get("auto_map")
            if auto_map:
                found[str(path)] = auto_map
    return found


def check_remote_code(spec: TeacherSpec, folder: Path) -> None:
    """A folder that ships its own modelling code runs only when the user said so."""
    if spec.trust_remote_code:
        return
    found = remote_code_configs(folder)
    if found:
        path, auto_map = next(iter(found.items()))
        classes = ", ".join(f"{name}: {target}" for name, target in auto_map.items())
        raise TeacherConfigError(
            f"teachers.{spec.name}.trust_remote_code is off, but {path} has an auto_map ({classes}): the model runs "
            f"Python files of {folder}. Read them, then set --config.teachers.{spec.name}.trust_remote_code=True.")


def resolve_prompt(spec: TeacherSpec, folder: Path) -> str:
    """The prompt text: `spec.prompt`, or the one `spec.prompt_name` names in the folder's prompts file."""
    key = f"teachers.{spec.name}"
    if not spec.prompt_name:
        return spec.prompt
    if spec.prompt:
        raise TeacherConfigError(f"{key}.prompt and {key}.prompt_name are both set; keep one (prompt_name looks the "
                                 f"text up in {folder / PROMPTS_FILE}).")
    path = folder / PROMPTS_FILE
    prompts = (json.loads(path.read_text(encoding="utf-8")).get("prompts") or {}) if path.is_file() else {}
    if spec.prompt_name not in prompts:
        raise TeacherConfigError(f"{key}.prompt_name={spec.prompt_name!r}: {path} defines "
                                 f"{', '.join(repr(name) for name in prompts) or 'no prompts'}; name one of them, "
                                 f"or give the text itself as {key}.prompt.")
    return str(prompts[spec.prompt_name])


def check_teacher_folder(spec: TeacherSpec) -> Path:
    """The teacher's folder, after every check that needs no weights loaded (pooling, window, path, tokenizer files,
    module layout, remote code): the export runs it on every teacher before it loads the first."""
    key = f"teachers.{spec.name}"
    if spec.pooling not in POOLINGS:
        raise TeacherConfigError(f"{key}.pooling={spec.pooling!r}; choose one of {', '.join(POOLINGS)}.")
    if spec.max_seq_length < 0:
        raise TeacherConfigError(f"{key}.max_seq_length={spec.max_seq_length} must be ≥ 0 (0: the model's own).")
    try:
        folder = assets.resolve_model_path(spec.path)
    except assets.AssetError as error:
        raise TeacherConfigError(f"{key}.path={spec.path!r}: {error}") from error
    if not folder.is_dir():
        raise TeacherConfigError(f"{key}.path={spec.path!r}: {folder} is not a folder. Give a sentence-transformers "
                                 f"folder, or a Hugging Face folder with a pooling (mean or cls).")
    tokenizer_folder.require_vocabulary_files(tokenizer_folder_of(folder), f"{key}.path")
    if spec.pooling == "auto":
        if not (folder / "modules.json").is_file():
            raise TeacherConfigError(f"{key}.pooling='auto' needs a sentence-transformers folder (modules.json), "
                                     f"and {folder} has none; set {key}.pooling to 'mean' or 'cls'.")
    else:
        if spec.dense_head:
            raise TeacherConfigError(f"{key}.dense_head={spec.dense_head!r} needs pooling 'auto' (a "
                                     f"sentence-transformers folder's own modules); clear {key}.dense_head or set "
                                     f"{key}.pooling='auto'.")
        if not (folder / "config.json").is_file():
            raise TeacherConfigError(f"{key}.path: {folder} has no config.json; it is not a Hugging Face model "
                                     f"folder.")
    check_remote_code(spec, folder)
    return folder


def load_teacher(spec: TeacherSpec, local_rank: int | None = None) -> Teacher:
    """The teacher `spec` names, after checking its folder, pooling, device and dtype; errors name the config key.

    `local_rank`: the GPU an `auto` device means (default: $LOCAL_RANK, as torchrun sets it, else 0)."""
    folder = check_teacher_folder(spec)
    placement = resolve_placement(spec, local_rank)
    prompt = resolve_prompt(spec, folder)
    if spec.pooling == "auto":
        return SentenceTransformerTeacher(spec, folder, placement, prompt)
    return PooledHuggingFaceTeacher(spec, folder, placement, prompt)


def encode_texts(teacher: Teacher, texts: Sequence[str], *, max_tokens_per_batch: int,
                 max_batch_size: int) -> np.ndarray:
    """Raw (n, dim) float32 vectors of `texts` in their order, computed in length-bucketed batches."""
    vectors = np.empty((len(texts), teacher.dim), dtype=np.float32)
    for batch in plan_length_batches(teacher.token_lengths(texts), max_tokens_per_batch, max_batch_size):
        vectors[batch] = teacher.encode_batch([texts[index] for index in batch])
    return vectors
