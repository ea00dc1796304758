"""Damaged records folders: named on open (size), before training (count, first id) and by `verify` (every byte)."""
import json
import re
import shutil

import pytest

from embed_jax.data import records, verify
from embed_jax.data.records import RecordsError


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / folder.name)


def run_verify(capsys, *folders):
    code = verify.main([f"--records={folder}" for folder in folders])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def swap_shards(folder, first: int, second: int) -> None:
    """Swap two shard files of the same record count (16 each), leaving the sidecars where they were."""
    a, b = folder / f"shard-{first:05d}.array_record", folder / f"shard-{second:05d}.array_record"
    a.rename(folder / "swap")
    b.rename(a)
    (folder / "swap").rename(b)


def test_a_sound_folder_verifies(records_folder, capsys):
    code, out, _ = run_verify(capsys, records_folder)
    assert code == 0
    rows = [line for line in out.splitlines() if line.strip().startswith("shard-")]
    assert len(rows) == 6 and all(row.split()[-2:] == ["ok", "ok"] for row in rows)
    assert "84 records in 6 shards, 384-d float16" in out and "6 of 6 shards sound; 0 problem(s)" in out
    manifest = records.check_records_cheaply(records_folder, "data.records_dir")
    assert all(shard.sha256 and shard.num_bytes for shard in manifest.shards)


def test_swapped_shards_of_equal_count_are_found(records_folder, tmp_path, capsys):
    folder = copy_of(records_folder, tmp_path)
    swap_shards(folder, 0, 1)
    with pytest.raises(RecordsError, match=rf"data.records_dir='{folder}': .*shard-00000.array_record: its first "
                                           r"record is .*, its sidecar lists .*: shard files were swapped"):
        records.check_records_cheaply(folder, "data.records_dir")
    code, out, _ = run_verify(capsys, folder)
    assert code == verify.PROBLEM_EXIT_CODE
    assert "problem: " in out and "shard-00000.array_record: its first record" in out
    assert "0 of 6 shards sound" not in out and "4 of 6 shards sound; 2 problem(s)" in out


def test_truncated_shard_is_named_on_open(records_folder, tmp_path, capsys):
    folder = copy_of(records_folder, tmp_path)
    path = folder / "shard-00003.array_record"
    path.write_bytes(path.read_bytes()[:40000])
    with pytest.raises(RecordsError, match=r"shard-00003.array_record: 40,000 bytes, its sidecar lists [0-9,]+: the "
                                           r"file was truncated or replaced\. Check every shard with `python -m "
                                           r"embed_jax.data.verify"):
        records.read_manifest(folder)
    code, out, _ = run_verify(capsys, folder)
    assert code == 1 and "shard-00003.array_record: 40,000 bytes" in out


@pytest.mark.parametrize("offset, found", [
    (5000, r"shard-00001.array_record: records 0…15 are unreadable \(Corrupted Riegeli.*hash mismatch"),  # a record
    (40000, r"shard-00001.array_record: its sha256 is not the one its sidecar lists"),  # the file's padding
])
def test_a_flipped_byte_is_found_by_verify(records_folder, tmp_path, capsys, offset, found):
    folder = copy_of(records_folder, tmp_path)
    path = folder / "shard-00001.array_record"
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    records.check_records_cheaply(folder, "data.records_dir")  # size, count and first record unchanged
    code, out, _ = run_verify(capsys, folder)
    assert code == 1
    [problem] = [line for line in out.splitlines() if "problem: " in line]
    assert re.search(found, problem), problem


def test_sidecars_without_a_checksum_are_read_and_said_so(records_folder, tmp_path, capsys):
    """A folder written before sidecars recorded size and sha256."""
    folder = copy_of(records_folder, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    for shard in manifest["shards"]:
        del shard["num_bytes"], shard["sha256"]
        sidecar_path = folder / shard["file"].replace(".array_record", ".json")
        sidecar = json.loads(sidecar_path.read_text())
        del sidecar["shard"]["num_bytes"], sidecar["shard"]["sha256"]
        sidecar_path.write_text(json.dumps(sidecar))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert records.check_records_cheaply(folder, "data.records_dir").num_records == 84
    code, out, _ = run_verify(capsys, folder)
    assert code == 0 and out.count("no checksum recorded") == 6


def test_an_edited_manifest_is_blamed_not_a_stray_shard(records_folder, tmp_path):
    folder = copy_of(records_folder, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["dtype"] = "float32"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecordsError) as caught:
        records.read_manifest(folder)
    message = str(caught.value)
    assert "dtype: 'float32' vs 'float16'" in message and "stray" not in message
    assert "manifest.json no longer matches itself (its fields give export id" in message
    assert "edited after the export" in message


def test_an_edited_shard_list_names_the_field(records_folder, tmp_path):
    folder = copy_of(records_folder, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][2]["first_id"] = "mixed.txt:999"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecordsError, match=r"manifest.json no longer matches shard-00002.json on shard 2 \(first_id: "
                                           r"'mixed.txt:999' vs 'mixed.txt:33', manifest vs sidecar\)"):
        records.read_manifest(folder)


def test_not_a_records_folder_is_a_usage_error(tmp_path, capsys):
    code, _, err = run_verify(capsys, tmp_path)
    assert code == 2 and err.startswith("error: ") and "manifest.json does not exist" in err
    code, _, err = run_verify(capsys)
    assert code == 2 and "--records" in err
