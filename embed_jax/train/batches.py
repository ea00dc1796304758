"""Text records → this process's batches → one global batch of jax.Arrays per step.

    open_records   the records folder, checked against the config's teacher_dim (errors name the key)
    open_eval_records  the held-out records, checked to hold the training records' teachers, order and normalisation
    check_disjoint the held-out records repeat no training record (by id or text): preflight, once per run
    make_batches   the grain pipeline as the config sets it (shuffle, per-process shard, tokenise, length buckets,
                   each teacher's block weighted by data.teacher_weights: teacher_scales)
    global_batch   this process's rows → one global jax.Array per field (processes agree on the padded length)

Every process runs the same code on its own slice of the records; the loss sees the global batch.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from embed_jax.data import dataset_index, pipeline, records, teacher_weights, wordnet_pairs


# Fields only some batches carry: image pixels (stage 4), a pair stage's labels (data/wordnet_pairs.py).
OPTIONAL_FIELDS = ("pixel_values", "pair", "is_query")


def global_batch(local: Mapping[str, np.ndarray], batch_sharding: Any, *, pad_token_id: int) -> dict[str, jax.Array]:
    """This process's rows → one global jax.Array per field; processes first agree on the padded length."""
    local = dict(local)
    if jax.process_count() > 1:
        lengths = multihost_utils.process_allgather(np.asarray(local["input_ids"].shape[1]))
        local = pipeline.pad_batch_to_length(local, int(np.max(lengths)), pad_token_id=pad_token_id)
    fields = ("input_ids", "attention_mask", "teacher") + tuple(name for name in OPTIONAL_FIELDS if name in local)
    return {name: jax.make_array_from_process_local_data(batch_sharding, np.asarray(local[name])) for name in fields}


def open_records(config: ml_collections.ConfigDict, folder: str, key: str) -> pipeline.RecordDataSource:
    """The records of `folder` (config key `key`), refused with the key named when they cannot train this config."""
    for part in str(folder).split(","):  # counts, first ids and sizes against the sidecars, before any work
        if part.strip():
            records.check_records_cheaply(part.strip(), key)  # its errors name the key
    try:
        source = pipeline.RecordDataSource(folder, records_key=key)
    except records.RecordsError as error:
        raise records.RecordsError(f"config key {key}: {error}") from None
    teacher_dim = config.model.teacher_dim
    if teacher_dim:
        pipeline.check_manifest_for_training(source.manifest, teacher_dim=teacher_dim,
                                             teacher_dim_key="model.teacher_dim", records_key=key)
    return source


def open_eval_records(config: ml_collections.ConfigDict) -> pipeline.RecordDataSource:
    """data.eval_records_dir, refused unless its vectors line up with data.records_dir's, slot for slot."""
    source = open_records(config, config.data.eval_records_dir, "data.eval_records_dir")
    check_same_teachers(records.read_manifest(config.data.records_dir), source.manifest,
                        train_key="data.records_dir", held_out_key="data.eval_records_dir")
    return source


TEACHER_FIELDS = ("name", "dim", "pooling", "prompt", "weights_sha256")


def teacher_layout(manifest: records.Manifest) -> list[dict[str, Any]]:
    """What slot i of a record's vector means: each teacher (name, width, pooling, prompt, weights) in its order.
    A folder path or a storage dtype may differ between two exports; these may not."""
    return [{field: getattr(teacher, field) for field in TEACHER_FIELDS}
            for teacher in sorted(manifest.teachers, key=lambda teacher: teacher.order)]


def layout_differences(train: records.Manifest, held_out: records.Manifest) -> list[str]:
    """'training X, held-out Y' for the teacher list (when names or widths differ), each teacher's other fields,
    and the normalisation."""
    expected, found = teacher_layout(train), teacher_layout(held_out)
    if [(t["name"], t["dim"]) for t in expected] != [(t["name"], t["dim"]) for t in found]:
        lines = [f"teachers in order: training {teacher_list(expected)}, held-out {teacher_list(found)}"]
    else:
        lines = [f"{first['name']} {field}: training {first[field]!r}, held-out {second[field]!r}"
                 for first, second in zip(expected, found) for field in TEACHER_FIELDS if first[field] != second[field]]
    if train.normalisation != held_out.normalisation:
        lines.append(f"normalisation: training {train.normalisation!r}, held-out {held_out.normalisation!r}")
    return lines


def teacher_list(layout: list[dict[str, Any]]) -> str:
    return "[" + ", ".join(f"{teacher['name']} {teacher['dim']}" for teacher in layout) + "]"


def check_same_teachers(train: records.Manifest, held_out: records.Manifest, *, train_key: str,
                        held_out_key: str) -> None:
    """Held-out vectors of another teacher order (same total width) would be compared slot by slot with the wrong
    teacher's: every eval/* curve silently wrong. Refuse them, naming each difference."""
    differences = layout_differences(train, held_out)
    if differences:
        raise pipeline.PipelineConfigError(
            f"config key {held_out_key}: its teacher vectors do not line up with the training records' "
            f"({train_key}): {'; '.join(differences)}. Export the held-out texts with the training records' "
            "teachers, in the same order (configs/teachers.py teacher_order).")


# Validation batches are grouped by length whatever data.group_by is: the in-batch loss terms depend on who shares a
# batch, so a fixed grouping keeps eval/* curves comparable between runs that train on length or neighbour batches.
EVAL_GROUP_BY = "length"


# Held-out records may repeat a training text under another id up to this share: a natural corpus repeats texts
# (measured: 0.9% of the built-in corpus's texts occur more than once, WordNet glosses shared by synsets; 3 of
# mix_eval512's 512 validation texts occur, under other ids, among the first 150,000 built-in texts). An overlapping
# slice repeats every record, by id and text.
MAX_TEXT_ONLY_REPEATS = 0.05


@dataclasses.dataclass(frozen=True)
class Repeats:
    """Held-out records that repeat training records: by id (the same corpus record), by text alone (another id)."""
    by_id: int
    text_only: int
    first_by_id: str = ""
    first_text_only: str = ""


def repeated_records(train: pipeline.RecordDataSource, held_out: pipeline.RecordDataSource,
                     log=print) -> Repeats:
    """The held-out ids and text hashes against the training ones, from the shards' sidecars (data/dataset_index.py:
    tens of bytes a record, not the records; a folder exported before sidecars held them is read, and `log` says so).
    Texts compare in their folded form (case and whitespace), as the evaluation's hold-out check compares them."""
    held = dataset_index.dataset_index(held_out.folders, held_out.manifests, log=log)
    trained = dataset_index.dataset_index(train.folders, train.manifests, log=log)
    held_ids = set(held.ids)
    repeated_ids = {record_id for record_id in trained.ids if record_id in held_ids}
    same_id = [position for position, record_id in enumerate(held.ids) if record_id in repeated_ids]
    same_text = np.flatnonzero(np.isin(held.text_hashes, trained.text_hashes))
    text_only = sorted(set(same_text.tolist()) - set(same_id))
    return Repeats(len(same_id), len(text_only), held.ids[same_id[0]] if same_id else "",
                   held.ids[text_only[0]] if text_only else "")


def check_disjoint(train: pipeline.RecordDataSource, held_out: pipeline.RecordDataSource, *, train_key: str,
                   held_out_key: str, log=print) -> None:
    """Held-out records that repeat training records make the eval/* loss a training loss (it falls with
    memorisation): refuse them, naming both folders, how many repeat and one of them. A few texts repeated under
    other ids (MAX_TEXT_ONLY_REPEATS) are the corpus's own duplicates: one line says so, and training goes on."""
    repeats = repeated_records(train, held_out, log=log)
    where = (f"{', '.join(map(str, held_out.folders))} repeat records of the training records in "
             f"{', '.join(map(str, train.folders))} ({train_key})")
    if repeats.by_id or repeats.text_only > MAX_TEXT_ONLY_REPEATS * len(held_out):
        count = repeats.by_id + repeats.text_only
        example = repeats.first_by_id or repeats.first_text_only
        raise pipeline.PipelineConfigError(
            f"config key {held_out_key}: {count} of the {len(held_out)} records in {where} ({repeats.by_id} the "
            f"same id, {repeats.text_only} the same text under another id), e.g. {example!r}; their held-out loss "
            f"would measure memorisation. Export the validation records from a slice of the corpus the training "
            f"records do not hold (configs/teachers.py:eval starts at --config.corpus.skip_texts=100000, past every "
            f"export of fewer texts), or leave {held_out_key} empty.")
    if repeats.text_only:
        log(f"[preflight] {held_out_key}: {repeats.text_only} of the {len(held_out)} records in {where} by text "
            f"under another id, e.g. {repeats.first_text_only!r}: texts the corpus itself repeats; kept.")


def make_batches(config: ml_collections.ConfigDict, source: pipeline.RecordDataSource, *, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None, length_grouping_window: int | None = None,
                 group_by: str | None = None):
    """The pipeline as the config sets it; `length_grouping_window` and `group_by` override data.*'s."""
    if length_grouping_window is None:
        length_grouping_window = int(config.data.length_grouping_window)
    if group_by is None:
        group_by = str(config.data.group_by)
    return pipeline.make_dataset(
        source,
        tokenizer=tokenizer_path(config),
        global_batch_size=config.data.global_batch_size,
        max_length=config.data.max_length,
        length_buckets=tuple(config.data.length_buckets),
        length_grouping_window=length_grouping_window,
        group_by=group_by,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        include_ids=True,  # a NaN loss names the records of its batch (driver.check_finite)
        teacher_scales=teacher_scales(config, source),
    )


def pair_table(config: ml_collections.ConfigDict, source: pipeline.RecordDataSource, stage_name: str,
               log=print) -> wordnet_pairs.PairTable:
    """The WordNet pairs of data.records_dir for a pair stage, refused (naming the record or key) when a pair is
    held out or too few are there for one batch."""
    index = dataset_index.dataset_index(source.folders, source.manifests, log=log)
    table = wordnet_pairs.pair_table(index, records_key="data.records_dir")
    wordnet_pairs.check_enough_pairs(table, int(config.data.global_batch_size), records_key="data.records_dir",
                                     stage_name=stage_name)
    return table


def make_pair_batches(config: ml_collections.ConfigDict, source: pipeline.RecordDataSource,
                      table: wordnet_pairs.PairTable, *, seed: int, log=print):
    """A pair stage's batches (data/wordnet_pairs.py), tokenised, bucketed and weighted as make_batches'."""
    return wordnet_pairs.make_pair_dataset(
        table, source, tokenizer=tokenizer_path(config), global_batch_size=config.data.global_batch_size,
        max_length=config.data.max_length, length_buckets=tuple(config.data.length_buckets), seed=seed,
        process_index=jax.process_index(), process_count=jax.process_count(), include_ids=True,
        teacher_scales=teacher_scales(config, source), log=log)


def teacher_scales(config: ml_collections.ConfigDict, source: pipeline.RecordDataSource) -> np.ndarray | None:
    """The per-dimension factors of data.teacher_weights for `source`'s teachers (None: equal weights, the records'
    vectors unchanged); the training and the held-out records get the same, their teachers being checked alike."""
    ordered = sorted(source.manifest.teachers, key=lambda teacher: teacher.order)
    weights = teacher_weights.weights_for_teachers(
        config.data.teacher_weights, [teacher.name for teacher in ordered],
        records_dir=", ".join(map(str, source.folders)))
    return teacher_weights.block_scales([teacher.dim for teacher in ordered], weights)


def tokenizer_path(config: ml_collections.ConfigDict) -> str:
    """data.tokenizer, or the init folder's tokenizer when it is empty."""
    return str(config.data.tokenizer or config.model.init_from)


def pad_token_id(config: ml_collections.ConfigDict) -> int:
    """The tokenizer's padding id: processes pad their rows to an agreed length with it (`global_batch`)."""
    _, pad_id = pipeline.load_tokenizer(tokenizer_path(config), config.data.max_length)
    return pad_id
