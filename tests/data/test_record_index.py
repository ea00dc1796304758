"""Records checked for what is inside them: vectors finite and of unit norm, ids unique, the sidecars' record index
(ids and text hashes, what the hold-out checks and duplicate-id checks read instead of the records) true to its
shard; a damaged shard named alone."""
import dataclasses
import json
import re
import shutil

import numpy as np
import pytest

from embed_jax.data import dataset_index, pipeline, record_index, records, verify
from embed_jax.data.records import RecordsError


def rewrite_folder(source_folder, folder, edit):
    """`source_folder`'s records written again by the real writer (records.write_shard, manifest, sidecars) into
    `folder`, after `edit(shard_index, rows)` changed the rows [(id, text, vector), ...] of each shard in place."""
    manifest = records.read_manifest(source_folder)
    source = pipeline.RecordDataSource(source_folder)
    folder.mkdir(parents=True)
    shards, start = [], 0
    for index, info in enumerate(manifest.shards):
        rows = [(record["id"], record["text"], record["teacher"])
                for record in source.read_many(range(start, start + info.num_records))]
        start += info.num_records
        edit(index, rows)
        shards.append(records.write_shard(folder, index, rows, manifest, info.corpus_hash))
    done = dataclasses.replace(manifest, shards=tuple(shards), num_records=sum(s.num_records for s in shards))
    (folder / records.MANIFEST_NAME).write_text(done.to_json(), encoding="utf-8")
    return folder


def run_verify(capsys, *arguments):
    code = verify.main(list(arguments))
    return code, capsys.readouterr().out


def problems_of(out):
    return [line for line in out.splitlines() if "problem: " in line]


def test_the_export_writes_each_shards_record_index(records_folder):
    manifest = records.read_manifest(records_folder)
    source = pipeline.RecordDataSource(records_folder)
    index = dataset_index.dataset_index([records_folder], [manifest], log=pytest.fail)
    texts = [record["text"] for record in source.read_many(range(len(source)))]
    assert index.ids == [record["id"] for record in source.read_many(range(len(source)))]
    assert np.array_equal(index.text_hashes, record_index.text_hashes(texts))
    assert index.unindexed == 0
    assert record_index.text_hash("A  Dog.") == record_index.text_hash("a dog.")  # folded, as the hold-out compares


def test_verify_finds_a_non_finite_vector(records_folder, tmp_path, capsys):
    def poison(index, rows):
        if index == 2:
            record_id, text, vector = rows[5]
            rows[5] = (record_id, text, np.where(np.arange(len(vector)) == 7, np.nan, vector))

    folder = rewrite_folder(records_folder, tmp_path / "nan", poison)
    records.check_records_cheaply(folder, "data.records_dir")  # what the bytes say is intact
    code, out = run_verify(capsys, f"--records={folder}")
    assert code == verify.PROBLEM_EXIT_CODE
    [problem] = problems_of(out)
    assert "shard-00002.array_record: record 5 (id " in problem and "holds a non-finite vector (NaN or inf)" in problem


def test_verify_finds_a_vector_off_the_unit_norm_at_float16s_tolerance(records_folder, tmp_path, capsys):
    def stretch(index, rows):
        if index == 1:
            for row in (3, 9):
                record_id, text, vector = rows[row]
                rows[row] = (record_id, text, vector * 1.01)  # 1% off: 5× float16's tolerance
            record_id, text, vector = rows[4]
            rows[4] = (record_id, text, vector * 1.0004)  # within float16's rounding: sound

    folder = rewrite_folder(records_folder, tmp_path / "norm", stretch)
    code, out = run_verify(capsys, f"--records={folder}")
    [problem] = problems_of(out)
    assert code == 1 and "shard-00001.array_record: record 3 (id " in problem
    assert re.search(r"a vector of norm 1\.0(09|10)\d*, not 1 within 0.002 \(float16\) \(and 1 more records", problem)


def rename(shard, row, new_id):
    def edit(index, rows):
        if index == shard:
            rows[row] = (new_id, *rows[row][1:])
    return edit


@pytest.mark.parametrize("shard, row, where", [(0, 4, "within a shard"), (3, 2, "across shards")])
def test_verify_and_readers_refuse_a_repeated_id(records_folder, tmp_path, capsys, shard, row, where):
    first_id = records.read_manifest(records_folder).shards[0].first_id
    folder = rewrite_folder(records_folder, tmp_path / "repeat", rename(shard, row, first_id))
    code, out = run_verify(capsys, f"--records={folder}")
    [problem] = problems_of(out)
    assert code == 1 and f"record id {first_id!r} appears 2 times in {folder}" in problem
    assert f"shard-00000.array_record (record 0) and {folder}/shard-0000{shard}.array_record (record {row})" in problem
    with pytest.raises(RecordsError, match=rf"data.records_dir: record id '{first_id}' appears 2 times: "):
        pipeline.RecordDataSource(folder)
    # the quick check finds it too, from the sidecars
    code, out = run_verify(capsys, f"--records={folder}", "--sample=2")
    assert code == 1 and f"record id {first_id!r} appears 2 times" in out


def test_folders_read_together_may_not_share_ids(records_folder, tmp_path, capsys):
    copy = shutil.copytree(records_folder, tmp_path / "copy")
    with pytest.raises(RecordsError, match=r"data.eval_records_dir: record id '.*' appears 2 times: .*records.*/"
                                           r"shard-00000.array_record \(record 0\) and .*copy/shard-00000"):
        pipeline.RecordDataSource([records_folder, copy], records_key="data.eval_records_dir")
    code, out = run_verify(capsys, f"--records={records_folder}", f"--records={copy}")
    assert code == 1 and "appears 2 times across the folders" in out


def test_a_read_failure_names_the_shard_that_failed(records_folder, tmp_path):
    """A batch spans every shard; only shard 4 is damaged: the error names it, not the batch's first shards."""
    folder = shutil.copytree(records_folder, tmp_path / "damaged")
    path = folder / "shard-00004.array_record"
    data = bytearray(path.read_bytes())
    for offset in range(200, 264):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    source = pipeline.RecordDataSource(folder)
    one_of_each = [16 * shard for shard in range(6)]  # each shard's first record: the damaged one in shard 4
    with pytest.raises(RecordsError) as caught:
        source.read_many(one_of_each)
    message = str(caught.value)
    assert f"unreadable records in {path}:" in message and "shard-00000" not in message and "more)" not in message


def edit_sidecar(folder, shard, edit):
    path = folder / f"shard-{shard:05d}.json"
    sidecar = json.loads(path.read_text())
    edit(sidecar)
    path.write_text(json.dumps(sidecar))


def test_a_sidecar_index_of_another_shard_is_named_with_the_verify_command(records_folder, tmp_path, capsys):
    folder = shutil.copytree(records_folder, tmp_path / "swapped")
    other = json.loads((folder / "shard-00004.json").read_text())[record_index.INDEX_KEY]
    edit_sidecar(folder, 1, lambda sidecar: sidecar.update({record_index.INDEX_KEY: other}))
    with pytest.raises(RecordsError, match=rf"data.records_dir='{folder}': {folder}/shard-00001.json: its record "
                                           rf"index does not match shard-00001.array_record at record 0 \(sidecar: id "
                                           rf".*; shard: id .*\): the sidecar was edited or belongs to another shard. "
                                           rf"Check every shard with `python -m embed_jax.data.verify "
                                           rf"--records={folder}`"):
        records.check_records_cheaply(folder, "data.records_dir")


def test_verify_compares_every_row_of_the_index(records_folder, tmp_path, capsys):
    """A text hash changed past the first row: the cheap check cannot see it; verify names the row."""
    folder = shutil.copytree(records_folder, tmp_path / "edited")

    def change_row_7(sidecar):
        index = record_index.from_json(sidecar[record_index.INDEX_KEY])
        hashes = index.text_hashes.copy()
        hashes[7] ^= np.uint64(1)
        sidecar[record_index.INDEX_KEY] = record_index.RecordIndex(index.ids, hashes).to_json()

    edit_sidecar(folder, 2, change_row_7)
    records.check_records_cheaply(folder, "data.records_dir")
    code, out = run_verify(capsys, f"--records={folder}")
    [problem] = problems_of(out)
    assert code == 1 and "shard-00002.json: its record index does not match shard-00002.array_record at record 7" \
        in problem


def drop_indexes(folder, shards):
    for shard in shards:
        edit_sidecar(folder, shard, lambda sidecar: sidecar.pop(record_index.INDEX_KEY))


@pytest.mark.parametrize("dropped, said", [
    (range(6), "no sidecar holds a record index"),
    ((1, 4), "it mixes shards with a record index and 2 without (shard-00001.array_record, shard-00004.array_record"),
])
def test_shards_without_an_index_are_read_with_one_line_saying_so(records_folder, tmp_path, dropped, said):
    folder = shutil.copytree(records_folder, tmp_path / "old")
    drop_indexes(folder, dropped)
    manifest = records.check_records_cheaply(folder, "data.records_dir")
    lines = []
    index = dataset_index.dataset_index([folder], [manifest], log=lines.append)
    expected = dataset_index.dataset_index([records_folder], [records.read_manifest(records_folder)], log=pytest.fail)
    assert index.ids == expected.ids and np.array_equal(index.text_hashes, expected.text_hashes)
    [line] = lines
    assert line.startswith(f"[records] note: {folder}: {said}") and "their records are read for this check" in line
    assert f"--config.reuse_from={folder}" in line


def test_verify_sample_reads_a_few_records_a_shard(records_folder, tmp_path, capsys):
    code, out = run_verify(capsys, f"--records={records_folder}", "--sample=3")
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("shard-")]
    assert code == 0 and len(rows) == 6 and all(row[-2:] == ["sampled", "ok"] for row in rows)
    assert records.sample_rows(16, 3, "x")[0] == 0 and records.sample_rows(16, 3, "x")[-1] == 15
    assert records.sample_rows(16, 3, "x") == records.sample_rows(16, 3, "x")


def test_a_sample_without_indexes_says_duplicate_ids_went_unchecked(records_folder, tmp_path, capsys):
    folder = shutil.copytree(records_folder, tmp_path / "old")
    drop_indexes(folder, range(6))
    code, out = run_verify(capsys, f"--records={folder}", "--sample=2")
    assert code == 0 and "note: " in out and "their ids are not checked for repeats here" in out
