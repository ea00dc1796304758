"""A shard damaged after its export (same size, so the cheap check on open passes) is named when it is read."""
import shutil

import pytest

from embed_jax.data import pipeline, records
from embed_jax.data.records import RecordsError


def flip_bytes(path, start: int, count: int) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(start, start + count):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_record_names_its_shard_and_the_verify_command(teacher_records, tmp_path):
    folder = shutil.copytree(teacher_records, tmp_path / "records")
    manifest = records.read_manifest(folder)
    shard = records.shard_paths(folder, manifest)[-1]
    records.check_records_cheaply(folder, "data.records_dir")  # whole before the damage
    flip_bytes(shard, 200, 64)  # inside the first chunk's records, the file's size unchanged
    source = pipeline.RecordDataSource(folder)
    last_shard = range(len(source) - manifest.shards[-1].num_records, len(source))
    with pytest.raises(RecordsError, match=rf"unreadable records in {shard}: .* embed_jax.data.verify "
                                           rf"--records={folder}"):
        source.read_many(list(last_shard))
    with pytest.raises(RecordsError, match=rf"unreadable records in {shard}"):
        for index in last_shard:
            source[index]
