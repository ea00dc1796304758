"""Record bytes, shard sidecars, manifests: what is written is read back, and disagreement is refused."""
import json
import re
import shutil

import numpy as np
import pytest

from embed_jax.data import records
from embed_jax.data.records import RecordsError


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_record_bytes_round_trip(dtype):
    vector = np.random.default_rng(0).normal(size=7).astype(np.float32)
    data = records.encode_record("wiki:12:3", "Zürich — 東京 ✓", vector, dtype)
    assert len(data) == 16 + len("wiki:12:3") + len("Zürich — 東京 ✓".encode()) + 7 * np.dtype(dtype).itemsize
    record = records.decode_record(data)
    assert (record["id"], record["text"]) == ("wiki:12:3", "Zürich — 東京 ✓")
    assert record["teacher"].dtype == np.float32
    np.testing.assert_array_equal(record["teacher"], vector.astype(dtype).astype(np.float32))


def test_damaged_records_are_refused():
    data = records.encode_record("a", "text", np.ones(4, np.float32), "float32")
    with pytest.raises(RecordsError, match="does not match its header.*damaged"):
        records.decode_record(data[:-1])
    with pytest.raises(RecordsError, match="not an embed_jax record"):
        records.decode_record(b"XXXX" + data[4:])
    with pytest.raises(RecordsError, match="ids must fit 65535 bytes"):
        records.encode_record("x" * 70000, "text", np.ones(4), "float32")


def test_manifest_lists_what_the_shards_hold(records_folder):
    manifest = records.read_manifest(records_folder)
    assert manifest.num_records == 84 == sum(shard.num_records for shard in manifest.shards)
    assert [shard.num_records for shard in manifest.shards] == [16, 16, 16, 16, 16, 4]
    assert manifest.teacher_dim == 384 and manifest.dtype == "float16"
    assert manifest.teacher_slices == {"minilm": slice(0, 384)}
    for path in records.shard_paths(records_folder, manifest):
        assert records.count_shard_records(path) in (16, 4)


def copy_of(folder, tmp_path):
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def test_sidecar_that_disagrees_with_the_manifest_is_named(records_folder, tmp_path):
    folder = copy_of(records_folder, tmp_path)
    sidecar = json.loads((folder / "shard-00003.json").read_text())
    sidecar["dtype"] = "float32"
    (folder / "shard-00003.json").write_text(json.dumps(sidecar))
    with pytest.raises(RecordsError, match=r"shard-00003.json: this shard's manifest disagrees .* dtype: "
                                           r"'float16' vs 'float32'"):
        records.read_manifest(folder)


def test_shard_from_another_export_is_refused(records_folder, teacher_records, tmp_path):
    folder = copy_of(records_folder, tmp_path)
    for suffix in (".array_record", ".json"):
        shutil.copy(teacher_records / f"shard-00000{suffix}", folder / f"shard-00000{suffix}")
    with pytest.raises(RecordsError, match=r"shard-00000.json: this shard's manifest disagrees .*dtype"):
        records.read_manifest(folder)


def test_folders_read_together_must_agree(records_folder, teacher_records):
    pairs = [(folder, records.read_manifest(folder)) for folder in (records_folder, teacher_records)]
    with pytest.raises(RecordsError, match=rf"{re.escape(str(teacher_records))} disagree with "
                                           rf"{re.escape(str(records_folder))} on dtype: 'float16' vs 'float32'"):
        records.check_manifests_agree(pairs)
    records.check_manifests_agree([pairs[0], pairs[0]])


@pytest.mark.parametrize("edit, message", [
    (lambda folder: (folder / "shard-00002.array_record").unlink(), r"shard-00002.array_record: listed in the "
                                                                     r"manifest but missing"),
    (lambda folder: (folder / "manifest.json").unlink(), r"manifest.json does not exist.*embed_jax.teachers.export"),
    (lambda folder: (folder / "manifest.json").write_text("{not json"), r"unreadable manifest"),
    (lambda folder: (folder / "manifest.json").write_text('{"schema_version": 1}'), r"not a schema-1 embed_jax "
                                                                                     r"manifest"),
])
def test_broken_folders_are_refused(records_folder, tmp_path, edit, message):
    folder = copy_of(records_folder, tmp_path)
    edit(folder)
    with pytest.raises(RecordsError, match=message):
        records.read_manifest(folder)


def edit_manifest(folder, **fields):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(fields)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_unfinished_and_future_exports_are_refused(records_folder, tmp_path):
    folder = copy_of(records_folder, tmp_path)
    edit_manifest(folder, status=records.STATUS_IN_PROGRESS)
    with pytest.raises(RecordsError, match=r"not finished .* Run the same export command again"):
        records.read_manifest(folder)
    edit_manifest(folder, schema_version=2)
    with pytest.raises(RecordsError, match=r"schema version 2, this embed_jax reads 1"):
        records.read_manifest(folder)


def test_resume_refuses_a_gap_between_shards(records_folder, mixed_corpus, tmp_path, make_export_config):
    """An unfinished export whose middle shard was deleted by hand is not resumed around the hole."""
    from embed_jax.teachers import export

    folder = copy_of(records_folder, tmp_path)
    edit_manifest(folder, status=records.STATUS_IN_PROGRESS)
    (folder / "shard-00002.json").unlink()
    (folder / "shard-00002.array_record").unlink()
    with pytest.raises(RecordsError, match=r"shards shard-00003.array_record, shard-00003.json.* follow a gap at "
                                           r"shard-00002"):
        export.run_export(make_export_config(folder, mixed_corpus))
