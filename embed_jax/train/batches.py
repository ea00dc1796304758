"""Text records → this process's batches → one global batch of jax.Arrays per step.

    open_records   the records folder, checked against the config's teacher_dim (errors name the key)
    make_batches   the grain pipeline as the config sets it (shuffle, per-process shard, tokenise, length buckets)
    global_batch   this process's rows → one global jax.Array per field (processes agree on the padded length)

Every process runs the same code on its own slice of the records; the loss sees the global batch.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from embed_jax.data import pipeline


def global_batch(local: Mapping[str, np.ndarray], batch_sharding: Any, *, pad_token_id: int) -> dict[str, jax.Array]:
    """This process's rows → one global jax.Array per field; processes first agree on the padded length."""
    local = dict(local)
    if jax.process_count() > 1:
        lengths = multihost_utils.process_allgather(np.asarray(local["input_ids"].shape[1]))
        local = pipeline.pad_batch_to_length(local, int(np.max(lengths)), pad_token_id=pad_token_id)
    fields = ("input_ids", "attention_mask", "teacher") + (("pixel_values",) if "pixel_values" in local else ())
    return {name: jax.make_array_from_process_local_data(batch_sharding, np.asarray(local[name])) for name in fields}


def open_records(config: ml_collections.ConfigDict, folder: str, key: str) -> pipeline.RecordDataSource:
    source = pipeline.RecordDataSource(folder, records_key=key)
    teacher_dim = config.model.teacher_dim
    if teacher_dim:
        pipeline.check_manifest_for_training(source.manifest, teacher_dim=teacher_dim,
                                             teacher_dim_key="model.teacher_dim", records_key=key)
    return source


def make_batches(config: ml_collections.ConfigDict, source: pipeline.RecordDataSource, *, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None, length_grouping_window: int | None = None):
    """The pipeline as the config sets it; `length_grouping_window` overrides data.length_grouping_window."""
    if length_grouping_window is None:
        length_grouping_window = int(config.data.get("length_grouping_window", 1))
    return pipeline.make_dataset(
        source,
        tokenizer=tokenizer_path(config),
        global_batch_size=config.data.global_batch_size,
        max_length=config.data.max_length,
        length_buckets=tuple(config.data.length_buckets),
        length_grouping_window=length_grouping_window,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def tokenizer_path(config: ml_collections.ConfigDict) -> str:
    """data.tokenizer, or the init folder's tokenizer when it is empty."""
    return str(config.data.tokenizer or config.model.init_from)


def pad_token_id(config: ml_collections.ConfigDict) -> int:
    """The tokenizer's padding id: processes pad their rows to an agreed length with it (`global_batch`)."""
    _, pad_id = pipeline.load_tokenizer(tokenizer_path(config), config.data.max_length)
    return pad_id
