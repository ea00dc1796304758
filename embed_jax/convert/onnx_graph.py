"""An exported sentence-transformers folder → one ONNX graph with the embedding inside.

    input_ids (batch, sequence) int64, attention_mask (batch, sequence) int64
        → backbone → pooling over the mask → the head's Dense → L2 normalise
        → sentence_embedding (batch, dim) float32            [+ sentence_embedding_{dim} per head with all_heads]

An engine that knows nothing of sentence-transformers (ONNX Runtime, Triton, a browser) then serves the vector the
folder gives, whichever head: serving stacks that read only the backbone drop the extra 2_Dense modules
(docs/export.md, "Serving engines"). The graph is the folder's module chain (modules.json: Transformer → Pooling →
Dense → Normalize) with the chosen head's 2_Dense_{dim} in place of the default one; a folder without a Dense (e.g.
all-MiniLM-L6-v2 itself) gives its pooled, normalised vector.

Written into OUT: model.onnx (fp32), model_int8.onnx with quantize="int8" (onnxruntime's dynamic quantisation of
the MatMul weights), the folder's tokenizer (right padding, embed_jax/convert/tokenizer_files.py: the graph, like the
folder, numbers positions from the first token) and onnx_export.json (the outputs, their dimensions, the source and
the parity measured on export).

    result = export_onnx(folder, out, head=256, all_heads=False, quantize=None, overwrite=False)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embed_jax.convert import hf_export, st_export, tokenizer_files
from embed_jax.models.st_pooling import pooling_from_folder

MODEL_FILE, INT8_FILE, RECORD_FILE = "model.onnx", "model_int8.onnx", "onnx_export.json"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
# Backbones whose Hugging Face base model traces to ONNX with these settings, each held by a parity test
# (tests/convert/test_onnx.py): the same families embed_jax imports and exports.
SUPPORTED_FAMILIES = ("bert", "gpt2", "mpnet", "qwen2", "xlm-roberta")
# opset 17 has LayerNormalization as one node; onnxruntime ≥ 1.14 runs it.
OPSET = 17
ST_TYPES = {"Transformer", "Pooling", "Dense", "Normalize"}
# Real sentences of different lengths for the parity check run on every export (one batch, right-padded).
PARITY_TEXTS = (
    "A dog.",
    "The cat sat on the mat while the rain kept falling outside the kitchen window.",
    "Machine translation systems map a sentence in one language to a sentence with the same meaning in another.",
    "Yes",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen as a by-product "
    "of splitting water molecules inside the chloroplasts of plant cells.",
)
MIN_PARITY_COSINE = 0.99999


class OnnxExportError(ValueError):
    """The folder or the flags do not make an ONNX graph; the message names the flag and what to do."""


@dataclasses.dataclass(frozen=True)
class FolderPlan:
    """What the sentence-transformers folder computes, read from its files."""

    folder: Path
    model_type: str
    pooling: str  # "mean" | "cls" | "last" (embed_jax.models.student.SENTENCE_TRANSFORMERS_POOLING)
    heads: tuple[int, ...]  # every 2_Dense_{dim}, largest first
    default_head: int | None  # the Dense modules.json uses; None when it uses none
    normalize: bool
    hidden_size: int


@dataclasses.dataclass(frozen=True)
class OnnxResult:
    folder: Path
    outputs: dict[str, int]  # output name → dimension
    files: tuple[str, ...]
    parity: dict[str, float]  # output name → min cosine, onnxruntime vs the torch modules, on PARITY_TEXTS
    int8_cosine: dict[str, float] | None  # output name → min cosine, int8 graph vs fp32 graph (quantize="int8")


# ---------------------------------------------------------------------------------------------------- the folder


def read_folder(folder: str | Path) -> FolderPlan:
    """The folder's family, pooling, heads and module chain; an OnnxExportError naming --model for anything the
    graph cannot hold."""
    folder = Path(folder).expanduser()
    modules_file, config_file = folder / "modules.json", folder / "config.json"
    if not modules_file.is_file() or not config_file.is_file():
        raise OnnxExportError(f"--model={folder}: no modules.json and config.json there; give a sentence-transformers "
                              "folder (what python -m embed_jax.convert.hf writes)")
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_FAMILIES:
        raise OnnxExportError(f"--model={folder}: backbone model_type {model_type!r} has no ONNX export; supported: "
                              f"{', '.join(SUPPORTED_FAMILIES)} (a new family needs its entry in "
                              "embed_jax/convert/onnx_graph.py SUPPORTED_FAMILIES and a parity test)")
    modules = json.loads(modules_file.read_text())
    kinds = [module.get("type", "").rsplit(".", 1)[-1] for module in modules]
    unknown = [kind for kind in kinds if kind not in ST_TYPES]
    if unknown or kinds[:2] != ["Transformer", "Pooling"]:
        raise OnnxExportError(f"--model={folder}: modules.json chains {kinds}; the ONNX graph holds Transformer → "
                              "Pooling → [Dense] → [Normalize] only")
    dense_paths = [module["path"] for module, kind in zip(modules, kinds) if kind == "Dense"]
    heads = tuple(hf_export._dense_dims(folder))
    default_head = int(dense_paths[0].rsplit("_", 1)[-1]) if dense_paths else None
    return FolderPlan(folder=folder, model_type=model_type, pooling=pooling_from_folder(folder), heads=heads,
                      default_head=default_head, normalize="Normalize" in kinds,
                      hidden_size=int(config.get("hidden_size") or config.get("n_embd")))


def choose_outputs(plan: FolderPlan, head: int | None, all_heads: bool) -> dict[str, int | None]:
    """{output name: head dim (None: the pooled vector)}: `sentence_embedding` is --head (default: the folder's
    default head); all_heads adds `sentence_embedding_{dim}` for every head."""
    if head is not None and head not in plan.heads:
        have = ", ".join(map(str, plan.heads)) if plan.heads else "none (the folder has no 2_Dense_* head)"
        raise OnnxExportError(f"--head={head}: {plan.folder} has heads {have}; pass one of them, or leave --head out "
                              "for the folder's default")
    outputs: dict[str, int | None] = {OUTPUT_NAME: head if head is not None else plan.default_head}
    if all_heads:
        outputs.update({f"{OUTPUT_NAME}_{dim}": dim for dim in plan.heads})
    return outputs


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuses a non-empty --out unless --overwrite, and --overwrite on a folder this exporter did not write."""
    if out.exists() and not out.is_dir():
        raise OnnxExportError(f"--out={out} is a file; give a folder path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise OnnxExportError(f"--out={out} exists and is not empty; pass --overwrite to replace it, or choose "
                              "another --out")
    if not (out / RECORD_FILE).is_file():
        raise OnnxExportError(f"--out={out} holds files but no {RECORD_FILE}, so no ONNX export wrote it; "
                              "--overwrite replaces only an earlier ONNX export: choose another --out")
    listed = set(json.loads((out / RECORD_FILE).read_text()).get("files") or [])
    foreign = sorted(str(path.relative_to(out)) for path in out.rglob("*")
                     if path.is_file() and str(path.relative_to(out)) not in listed)
    if foreign:
        raise OnnxExportError(f"--out={out} holds {', '.join(foreign)}, which the earlier ONNX export did not write; "
                              "move them away or choose another --out")


# ---------------------------------------------------------------------------------------------------- the graph


def build_module(plan: FolderPlan, outputs: dict[str, int | None]) -> Any:
    """The torch module the graph is traced from: backbone, pooling, every named output's Dense, normalisation."""
    import torch
    from transformers import AutoModel

    class EmbeddingGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # The eager attention traces to plain MatMul/Softmax nodes every ONNX engine runs.
            self.backbone = AutoModel.from_pretrained(str(plan.folder), attn_implementation="eager",
                                                      dtype=torch.float32).eval()
            self.heads = torch.nn.ModuleDict()
            for dim in sorted({dim for dim in outputs.values() if dim is not None}):
                kernel, bias = hf_export.read_head(plan.folder, dim, plan.hidden_size)
                linear = torch.nn.Linear(plan.hidden_size, dim)
                linear.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.T)).float()
                linear.bias.data = torch.from_numpy(np.asarray(bias)).float()
                self.heads[str(dim)] = linear

        def forward(self, input_ids, attention_mask):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            pooled = pool(hidden, attention_mask, plan.pooling)
            vectors = []
            for dim in outputs.values():
                vector = self.heads[str(dim)](pooled) if dim is not None else pooled
                vectors.append(torch.nn.functional.normalize(vector, p=2.0, dim=1, eps=1e-12)
                               if plan.normalize else vector)
            return tuple(vectors)

    return EmbeddingGraph().eval()


def pool(hidden: Any, attention_mask: Any, method: str) -> Any:
    """sentence-transformers' pooling of right-padded rows (embed_jax/models/pooling.py is the Flax twin)."""
    import torch

    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if method == "mean":
        return (hidden * mask).sum(dim=1) / torch.clamp(mask.sum(dim=1), min=1e-9)
    if method in ("cls", "first"):
        return hidden[:, 0]
    if method == "last":
        last = torch.clamp(attention_mask.sum(dim=1) - 1, min=0)
        return hidden[torch.arange(hidden.shape[0]), last]
    raise OnnxExportError(f"pooling {method!r} has no ONNX graph; supported: mean, cls, last")


def trace(module: Any, outputs: dict[str, int | None], path: Path) -> None:
    """torch.onnx's TorchScript exporter (dynamo=False), batch and sequence dynamic."""
    import torch

    sample = torch.ones((2, 7), dtype=torch.int64)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic.update({name: {0: "batch"} for name in outputs})
    with torch.no_grad():
        torch.onnx.export(module, (sample, sample.clone()), str(path), input_names=list(INPUT_NAMES),
                          output_names=list(outputs), dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime's dynamic quantisation: int8 weights, activations quantised per batch at run time.

    Per output channel: on all-MiniLM-L6-v2 and five real sentences the int8 graph's min cosine to the fp32 graph was
    0.966 per channel, 0.888 per tensor (QInt8), 0.947 per tensor QUInt8, 0.707 with reduce_range.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Its shape inference writes scratch files (sym_shape_infer_temp.onnx and a weights .data file, ~90 MB for
    # MiniLM) into the current folder: run it from the staging folder, which is removed or moved as a whole.
    folder = Path(target).parent
    before = set(folder.iterdir())
    with contextlib.chdir(folder):
        quantize_dynamic(str(Path(source).resolve()), str(Path(target).resolve()), weight_type=QuantType.QInt8,
                         per_channel=True)
    for scratch in set(folder.iterdir()) - before - {Path(target)}:
        scratch.unlink()


def session(path: Path, threads: int = 0) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(onnx_session: Any, tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
    """{output name: (len(texts), dim)} for one right-padded batch."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    feeds = {name: batch[name].astype(np.int64) for name in INPUT_NAMES}
    names = [output.name for output in onnx_session.get_outputs()]
    return dict(zip(names, onnx_session.run(names, feeds)))


def parity(module: Any, onnx_path: Path, tokenizer: Any, max_length: int) -> dict[str, float]:
    """{output: min cosine} of onnxruntime's vectors vs the torch module's on PARITY_TEXTS in one batch."""
    import torch

    batch = tokenizer(list(PARITY_TEXTS), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        expected = [vector.numpy() for vector in module(batch["input_ids"], batch["attention_mask"])]
    actual = run_session(session(onnx_path), tokenizer, PARITY_TEXTS, max_length)
    return {name: float(cosines(actual[name], reference).min())
            for name, reference in zip(actual, expected)}


def int8_agreement(folder: Path, max_length: int) -> dict[str, float]:
    """{output: min cosine} of the int8 graph's vectors vs the fp32 graph's on PARITY_TEXTS (a cost, not a gate)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    fp32 = run_session(session(folder / MODEL_FILE), tokenizer, PARITY_TEXTS, max_length)
    int8 = run_session(session(folder / INT8_FILE), tokenizer, PARITY_TEXTS, max_length)
    return {name: float(cosines(int8[name], fp32[name]).min()) for name in fp32}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def max_seq_length(folder: Path) -> int:
    path = folder / "sentence_bert_config.json"
    value = json.loads(path.read_text()).get("max_seq_length") if path.is_file() else None
    return int(value) if isinstance(value, int) and value > 0 else 512


# ---------------------------------------------------------------------------------------------------- export


def export_onnx(folder: str | Path, out: str | Path, *, head: int | None = None, all_heads: bool = False,
                quantize: str | None = None, overwrite: bool = False) -> OnnxResult:
    """The whole export (module docstring); written aside and moved into `out` at the end."""
    from transformers import AutoTokenizer

    if quantize not in (None, "", "int8"):
        raise OnnxExportError(f"--quantize={quantize}: the one quantisation is int8 (or leave --quantize out)")
    folder, out = Path(folder).expanduser().resolve(), Path(out).expanduser().resolve()
    plan = read_folder(folder)
    outputs = choose_outputs(plan, head, all_heads)
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.onnx-", dir=out.parent))
    try:
        length = max_seq_length(folder)
        notices = tokenizer_files.copy_tokenizer(folder, staging, max_length=length)
        for name in ("sentence_bert_config.json", "config.json"):  # the window and the backbone, for the record
            if (folder / name).is_file():
                shutil.copy2(folder / name, staging / name)
        module = build_module(plan, outputs)
        trace(module, outputs, staging / MODEL_FILE)
        measured = parity(module, staging / MODEL_FILE, AutoTokenizer.from_pretrained(str(staging)), length)
        bad = {name: value for name, value in measured.items() if value < MIN_PARITY_COSINE}
        if bad:
            raise OnnxExportError(f"--model={folder}: the traced graph gives other vectors than the torch modules "
                                  f"(min cosine {bad} < {MIN_PARITY_COSINE}); nothing was written")
        int8_cosine = None
        if quantize == "int8":
            quantize_int8(staging / MODEL_FILE, staging / INT8_FILE)
            int8_cosine = int8_agreement(staging, length)
        files = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file())
        record = {"source": st_export.portable_path(folder, out), "model_type": plan.model_type, "pooling": plan.pooling,
                  "normalize": plan.normalize, "inputs": list(INPUT_NAMES),
                  "outputs": {name: dim if dim is not None else plan.hidden_size for name, dim in outputs.items()},
                  "heads": {name: dim for name, dim in outputs.items()}, "opset": OPSET, "max_seq_length": length,
                  "padding_side": tokenizer_files.SIDE, "parity_min_cosine": measured,
                  "quantized": INT8_FILE if quantize == "int8" else None,
                  "int8_min_cosine_to_fp32": int8_cosine, "notices": notices,
                  "files": files + [RECORD_FILE]}
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        out.chmod(0o755)  # mkdtemp makes it 0700; a model folder is meant to be shared
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OnnxResult(folder=out, outputs=record["outputs"], files=tuple(record["files"]), parity=measured,
                      int8_cosine=int8_cosine)
