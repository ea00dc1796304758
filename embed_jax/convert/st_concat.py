"""A sentence-transformers module that encodes with several models and concatenates their vectors: the
distillation target of docs/method.md §2 (each model's L2-normalised vector, block i scaled by √w_i, so the result
is a unit vector whose cosine is Σ w_i cos_i; equal weights: the paper's target). The document route of the
asymmetric Router folder (embed_jax/convert/router.py).

This file is copied verbatim into that folder as `embed_jax_concat.py` and loaded from there by
`SentenceTransformer(folder, trust_remote_code=True)`, so it imports only torch and sentence-transformers.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import InputModule

CONFIG_FILE = "concat_config.json"


class ConcatenatedModels(InputModule):
    """Texts → [√w_1·v_1, √w_2·v_2, ...], each v_i the unit vector of model i."""

    config_keys = ["names", "weights"]
    save_in_root = False

    def __init__(self, models: list[SentenceTransformer], names: list[str], weights: list[float]):
        super().__init__()
        if not (len(models) == len(names) == len(weights)) or not models:
            raise ValueError(f"ConcatenatedModels needs one name and one weight per model, got {len(models)} models, "
                             f"{len(names)} names, {len(weights)} weights")
        self.models = torch.nn.ModuleList(models)
        self.names, self.weights = list(names), [float(weight) for weight in weights]

    @property
    def modalities(self) -> list[str]:
        return ["text"]

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return {"texts": list(inputs)}  # each model tokenizes with its own tokenizer and window in forward

    def tokenize(self, texts: list[str], **kwargs: Any) -> dict[str, Any]:
        return self.preprocess(texts)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        blocks = []
        for model, weight in zip(self.models, self.weights):
            vectors = model.encode(features["texts"], convert_to_tensor=True, normalize_embeddings=True,
                                   batch_size=len(features["texts"]), show_progress_bar=False)
            blocks.append(math.sqrt(weight) * vectors.float())
        features["sentence_embedding"] = torch.cat(blocks, dim=1)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return sum(int(model.get_sentence_embedding_dimension()) for model in self.models)

    get_embedding_dimension = get_sentence_embedding_dimension

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        for name, model in zip(self.names, self.models):
            model.save(os.path.join(output_path, name))
        with open(os.path.join(output_path, CONFIG_FILE), "w", encoding="utf-8") as handle:
            json.dump({"names": self.names, "weights": self.weights}, handle, indent=2)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> "ConcatenatedModels":
        folder = os.path.join(model_name_or_path, subfolder)
        with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as handle:
            config = json.load(handle)
        models = [SentenceTransformer(os.path.join(folder, name), device="cpu", local_files_only=True)
                  for name in config["names"]]
        return cls(models, config["names"], config["weights"])
