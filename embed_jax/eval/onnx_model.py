"""An ONNX graph written by `python -m embed_jax.convert.onnx` as an evaluated model, run by onnxruntime.

The spec is the export folder (its fp32 `model.onnx`) or one graph file in it (`OUT/model_int8.onnx`, the int8
graph): the folder's `onnx_export.json` names the outputs and their heads, its tokenizer and window are the graph's
(docs/export.md, "ONNX"). Each head among the outputs is one row, named as the sentence-transformers folder names
it (`1152`, `256`, or `pooled` for a graph without a Dense), so the graph's rows line up with its source folder's;
`sentence_embedding` is the default head (with --all_heads it repeats `sentence_embedding_{dim}` and is read once).
Batches are length-bucketed with the plan of the other models (embed_jax.teachers.batching), every output of one
batch from one run of the graph.

The hold-out check is the source folder's (onnx_export.json's `source`): an embed_jax export is checked as the
folder itself would be; a source that is gone leaves the rows unchecked.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embed_jax.convert import onnx_graph
from embed_jax.convert.hf_export import EXPORT_FILE
from embed_jax.eval import overlap
from embed_jax.eval.encoding import POOLED_HEAD, EncodeContext, EvalModel, EvalProgress, ModelSpecError, \
    files_fingerprint
from embed_jax.teachers.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_TOKENS_PER_BATCH, plan_length_batches

GRAPH_SUFFIX = ".onnx"


def is_onnx_spec(path: Path) -> bool:
    """An ONNX export folder, or a graph file."""
    return (path.is_dir() and (path / onnx_graph.RECORD_FILE).is_file()) or path.suffix == GRAPH_SUFFIX


def graph_file(spec: str, path: Path) -> Path:
    """The graph a spec names: the folder's fp32 model.onnx, or the file itself."""
    graph = path / onnx_graph.MODEL_FILE if path.is_dir() else path
    if not graph.is_file():
        raise ModelSpecError(f"model spec {spec!r}: {graph} does not exist; give an ONNX export folder "
                             f"(python -m embed_jax.convert.onnx) or one of its .onnx files.")
    if not (graph.parent / onnx_graph.RECORD_FILE).is_file():
        raise ModelSpecError(f"model spec {spec!r}: {graph.parent} has no {onnx_graph.RECORD_FILE}, so the graph's "
                             "outputs, tokenizer and window are unknown; score graphs written by "
                             "python -m embed_jax.convert.onnx (docs/export.md).")
    return graph.resolve()


def output_heads(record: dict[str, Any]) -> dict[str, str]:
    """{row name: output name}: each head once, in the record's output order."""
    heads: dict[str, str] = {}
    for output, dim in record["heads"].items():
        heads.setdefault(POOLED_HEAD if dim is None else str(dim), output)
    return heads


def source_holdout(spec: str, record: dict[str, Any], folder: Path, allow_overlap: bool) -> overlap.HoldoutCheck:
    """The source folder's hold-out check; `source` is relative to the ONNX folder (absolute in older exports)."""
    if not record.get("source"):
        return overlap.HoldoutCheck(status=overlap.UNCHECKED, note=f"{onnx_graph.RECORD_FILE} names no source folder")
    source = folder / Path(record["source"])  # an absolute source stays itself
    if not source.is_dir():
        return overlap.HoldoutCheck(status=overlap.UNCHECKED, note=f"the graph's source folder {source} "
                                                                   f"({onnx_graph.RECORD_FILE}) is gone")
    if (source / EXPORT_FILE).is_file():
        return overlap.check_exported_folder(spec, source, allow_overlap=allow_overlap)
    return overlap.external()


class OnnxModel(EvalModel):
    kind = "onnx"

    def __init__(self, spec: str, path: Path, *, allow_overlap: bool = False, max_length: int = 0):
        from transformers import AutoTokenizer

        self.spec, self.graph = spec, graph_file(spec, path)
        self.folder = self.graph.parent
        record = json.loads((self.folder / onnx_graph.RECORD_FILE).read_text(encoding="utf-8"))
        self.outputs = output_heads(record)
        self.heads = {head: int(record["outputs"][output]) for head, output in self.outputs.items()}
        self.default_head = next(head for head, output in self.outputs.items()
                                 if record["heads"][output] == record["heads"][onnx_graph.OUTPUT_NAME])
        self.max_length = max_length or int(record["max_seq_length"])
        self.holdout = source_holdout(spec, record, self.folder, allow_overlap)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self.session = onnx_graph.session(self.graph)
        self.source = {"graph": str(self.graph), "folder_source": record.get("source"),
                       "max_length": self.max_length, "outputs": self.outputs}

    def fingerprint(self) -> str:
        return files_fingerprint(self.folder, settings={"kind": self.kind, "graph": self.graph.name,
                                                        "max_length": self.max_length})

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)

    def encode_uncached(self, texts: Sequence[str], context: EncodeContext) -> dict[str, np.ndarray]:
        vectors = {head: np.empty((len(texts), dim), dtype=np.float32) for head, dim in self.heads.items()}
        progress = EvalProgress(len(texts), self.spec, context.progress_every_s)
        for batch in plan_length_batches(self.token_lengths(texts), DEFAULT_MAX_TOKENS_PER_BATCH,
                                         DEFAULT_MAX_BATCH_SIZE):
            outputs = onnx_graph.run_session(self.session, self.tokenizer, [texts[index] for index in batch],
                                             self.max_length)
            for head, output in self.outputs.items():
                vectors[head][batch] = outputs[output]
            progress.advance(len(batch))
        progress.finish()
        return vectors
