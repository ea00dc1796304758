"""The WordNet pairs a pair stage trains on (embed_jax/data/wordnet_pairs.py), from real records: a usage example and
its synset's definition per pair, the validation split left out, the hold-out refused naming the record, batches of
distinct synsets whose labels survive any process count, one epoch covering each synset once."""
from pathlib import Path

import numpy as np
import pytest

import kit
from embed_jax.data import corpora, dataset_index, pipeline, wordnet_pairs
from embed_jax.data.dataset_index import DatasetIndex

TRAINING_SYNSETS, VALIDATION_SYNSETS = kit.PAIR_TRAINING_SYNSETS, kit.PAIR_VALIDATION_SYNSETS


def training_side(synsets, validation: bool):
    return kit.wordnet_training_side(synsets, validation)


def index_of(records: Path) -> DatasetIndex:
    source = pipeline.RecordDataSource(records)
    return dataset_index.dataset_index(source.folders, source.manifests)


def test_the_records_pairs_are_their_training_side_synsets(pair_records):
    index = index_of(pair_records)
    table = wordnet_pairs.pair_table(index, records_key="data.records_dir")
    assert len(table) == TRAINING_SYNSETS and table.validation_left_out == VALIDATION_SYNSETS
    for synset, definition, examples in zip(table.synsets, table.definitions, table.examples):
        assert index.ids[definition] == f"wordnet:{synset}:definition"
        assert all(index.ids[row].startswith(f"wordnet:{synset}:example:") for row in examples)
        assert not corpora.is_validation_synset(synset)
    assert max(len(examples) for examples in table.examples) >= 2


def test_an_epoch_is_each_synset_once_with_its_examples_in_turn(pair_records):
    source = pipeline.RecordDataSource(pair_records)
    table = wordnet_pairs.pair_table(index_of(pair_records), records_key="data.records_dir")
    encoder = pipeline.BatchEncoder("asset:all-MiniLM-L6-v2", 32, (16, 32), include_ids=True)
    batches = wordnet_pairs.PairBatches(table, source, encoder, batch_size=4, seed=0)
    assert len(batches) == TRAINING_SYNSETS // 2
    for epoch in range(2):
        seen = []
        for batch in (batches[epoch * len(batches) + b] for b in range(len(batches))):
            queries, documents = batch["id"][batch["is_query"] == 1], batch["id"][batch["is_query"] == 0]
            assert [q.split(":")[1] for q in queries] == [d.split(":")[1] for d in documents]
            assert list(batch["pair"][batch["is_query"] == 1]) == list(batch["pair"][batch["is_query"] == 0])
            assert all(d.endswith(":definition") for d in documents) and all(":example:" in q for q in queries)
            seen += list(queries)
        synsets = [q.split(":")[1] for q in seen]
        assert len(set(synsets)) == len(synsets) == TRAINING_SYNSETS // 2 * 2
        several = table.synsets[int(np.argmax([len(e) for e in table.examples]))]
        if several in synsets:
            assert seen[synsets.index(several)].endswith(f":example:{epoch}")  # the epoch's turn


def test_processes_share_each_global_batch_with_its_labels(pair_records):
    source = pipeline.RecordDataSource(pair_records)
    table = wordnet_pairs.pair_table(index_of(pair_records), records_key="data.records_dir")
    encoder = pipeline.BatchEncoder("asset:all-MiniLM-L6-v2", 32, (32,), include_ids=True)
    whole = wordnet_pairs.PairBatches(table, source, encoder, batch_size=8, seed=3)[1]
    parts = [wordnet_pairs.PairBatches(table, source, encoder, batch_size=8, seed=3, process_index=p,
                                       process_count=2)[1] for p in range(2)]
    merged = {(record_id, int(pair), int(query)) for part in parts
              for record_id, pair, query in zip(part["id"], part["pair"], part["is_query"])}
    assert merged == set(zip(whole["id"], map(int, whole["pair"]), map(int, whole["is_query"])))
    assert len(merged) == 8


def test_a_held_out_synset_is_refused_naming_the_record():
    held_out = next(synset for synset in corpora.read_wordnet() if corpora.is_held_out_synset(synset.key))
    ids = [f"wordnet:{held_out.key}:definition", f"wordnet:{held_out.key}:example:0"]
    index = DatasetIndex(ids, np.array([1, 2], np.uint64), np.array([2]), [Path("shard-00000.array_record")])
    with pytest.raises(wordnet_pairs.PairsError, match=rf"config key data\.records_dir: record "
                                                       rf"'wordnet:{held_out.key}:definition' \(shard-00000"
                                                       r".*WordNet hold-out"):
        wordnet_pairs.pair_table(index, records_key="data.records_dir", held_out=np.zeros(0, np.uint64))


def test_a_held_out_text_under_a_training_id_is_refused():
    training = training_side(corpora.read_wordnet(), validation=False)[0]
    ids = [f"wordnet:{training.key}:definition", f"wordnet:{training.key}:example:0"]
    index = DatasetIndex(ids, np.array([11, 12], np.uint64), np.array([2]), [Path("shard-00000.array_record")])
    with pytest.raises(wordnet_pairs.PairsError, match=r"example:0'.*its text is a held-out text"):
        wordnet_pairs.pair_table(index, records_key="data.records_dir", held_out=np.array([12], np.uint64))


def test_too_few_pairs_or_an_odd_batch_is_refused_before_any_work(pair_records):
    table = wordnet_pairs.pair_table(index_of(pair_records), records_key="data.records_dir")
    with pytest.raises(wordnet_pairs.PairsError, match=r"hold 10 such synsets .* fewer than the 16 one batch needs"):
        wordnet_pairs.check_enough_pairs(table, 32, records_key="data.records_dir", stage_name="stage2_pairs")
    with pytest.raises(wordnet_pairs.PairsError, match=r"data\.global_batch_size=7: .* must be even"):
        wordnet_pairs.check_enough_pairs(table, 7, records_key="data.records_dir", stage_name="stage2_pairs")
