"""The export's output folder and its finished shards under faults: each is one line naming the path and the cause,
and what is left resumes to the records of an uninterrupted run."""
import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from array_record.python import array_record_module

from embed_jax.data import records
from embed_jax.data.records import RecordsError
from embed_jax.teachers import export


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture
def reference(make_config, corpus_file, tmp_path) -> Path:
    """An uninterrupted export of the test corpus (15 texts, 4 shards)."""
    folder = tmp_path / "reference"
    export.run_export(make_config(folder, corpus_file))
    return folder


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("error: ")
    return error


@pytest.mark.parametrize("layout", ["file", "under_a_file"])
def test_output_dir_where_no_folder_can_be_is_refused_before_any_work(make_config, corpus_file, tmp_path, capsys,
                                                                       monkeypatch, layout):
    (tmp_path / "taken").write_text("a user's file")
    output = tmp_path / "taken" if layout == "file" else tmp_path / "taken" / "records"
    monkeypatch.setattr(export.encoders, "load_teacher", lambda spec: pytest.fail("a teacher loaded"))
    assert export.main(make_config(output, corpus_file)) == 2
    error = one_line_error(capsys)
    expected = "is a file, not a folder" if layout == "file" else f"{tmp_path / 'taken'} is a file, so no folder"
    assert f"output_dir='{output}'" in error and expected in error
    assert (tmp_path / "taken").read_text() == "a user's file"


def test_read_only_output_dir_is_refused_before_any_work(make_config, corpus_file, tmp_path, capsys, monkeypatch):
    """Root writes through chmod, so the check is made to see what a read-only mount shows: os.access says no."""
    readonly = tmp_path / "mounted"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == readonly else real_access(path, mode))
    monkeypatch.setattr(export.encoders, "load_teacher", lambda spec: pytest.fail("a teacher loaded"))
    assert export.main(make_config(readonly / "records", corpus_file)) == 2
    assert f"{readonly} is not writable" in one_line_error(capsys)


REAL_WRITER = array_record_module.ArrayRecordWriter


class FullDiskWriter:
    """array_record's writer on a disk that fills after `room` records: raises what riegeli raises (measured on a
    256 KiB tmpfs: RuntimeError "write() failed: No space left on device; writing PATH; at byte 262144; ...")."""
    room = 0

    def __init__(self, path, options):
        self.path, self.inner = path, REAL_WRITER(path, options)

    def write(self, data):
        FullDiskWriter.room -= 1
        if FullDiskWriter.room < 0:
            raise RuntimeError(f"write() failed: No space left on device; writing {self.path}; at byte 262144")
        self.inner.write(data)

    def close(self):
        self.inner.close()


def test_full_disk_during_a_shard_is_one_line_and_resumes_exactly(make_config, corpus_file, tmp_path, capsys,
                                                                  monkeypatch, reference):
    folder = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(FullDiskWriter, "room", 6)  # shard 0 (4 records) fits, shard 1 does not
        patch.setattr(array_record_module, "ArrayRecordWriter", FullDiskWriter)
        assert export.main(make_config(folder, corpus_file)) == 2
    error = one_line_error(capsys)
    assert (f"output_dir='{folder}': writing {folder / 'shard-00001.array_record.tmp'} failed: No space left on "
            f"device (ENOSPC); free space there") in error
    # Shard 0 is finished; nothing of shard 1 is left, let alone counted.
    assert sorted(path.name for path in folder.glob("shard-*")) == ["shard-00000.array_record", "shard-00000.json"]
    assert export.main(make_config(folder, corpus_file)) == 0
    assert folder_bytes(folder) == folder_bytes(reference)


def test_full_disk_while_writing_a_sidecar_leaves_no_finished_shard(make_config, corpus_file, tmp_path, capsys,
                                                                    monkeypatch, reference):
    folder = tmp_path / "out"
    real_write = records.write_json_atomically

    def write(path, text):
        if path.name == "shard-00002.json":
            Path(f"{path}.tmp").write_text(text[:10])  # a partial temporary, as a full disk leaves it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, text)

    with monkeypatch.context() as patch:
        patch.setattr(records, "write_json_atomically", write)
        assert export.main(make_config(folder, corpus_file)) == 2
    error = one_line_error(capsys)
    assert f"output_dir='{folder}': writing {folder} failed: No space left on device (ENOSPC)" in error
    assert not (folder / "shard-00002.json").exists()
    assert export.main(make_config(folder, corpus_file)) == 0
    assert folder_bytes(folder) == folder_bytes(reference)


def interrupted_export(make_config, corpus_file, folder, monkeypatch, shards: int):
    real = records.write_shard
    calls = {"n": 0}

    def write_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > shards:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(records, "write_shard", write_shard)
        with pytest.raises(KeyboardInterrupt):
            export.run_export(make_config(folder, corpus_file))


def test_resume_names_a_truncated_finished_shard(make_config, corpus_file, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    interrupted_export(make_config, corpus_file, folder, monkeypatch, shards=2)
    shard = folder / "shard-00001.array_record"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(RecordsError, match=rf"{shard}: 1,000 bytes, its sidecar lists [0-9,]+: the file was "
                                           r"truncated or replaced"):
        export.run_export(make_config(folder, corpus_file))


def test_resume_names_swapped_finished_shards(make_config, corpus_file, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    interrupted_export(make_config, corpus_file, folder, monkeypatch, shards=2)
    # Same record count (4 each); size and first id tell them apart.
    first, second = (folder / f"shard-0000{index}.array_record" for index in (0, 1))
    data = first.read_bytes(), second.read_bytes()
    first.write_bytes(data[1])
    second.write_bytes(data[0])
    with pytest.raises(RecordsError, match=r"shard-00000.array_record: (its first record is 'corpus.txt:7', its "
                                           r"sidecar lists 'corpus.txt:1': shard files were swapped|[0-9,]+ bytes)"):
        export.run_export(make_config(folder, corpus_file))


def test_reuse_from_a_damaged_folder_copies_only_its_sound_shards(make_config, corpus_file, tmp_path, reference,
                                                                 capsys):
    damaged = shutil.copytree(reference, tmp_path / "damaged")
    shard = damaged / "shard-00002.array_record"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    repaired = tmp_path / "repaired"
    export.run_export(make_config(repaired, corpus_file, reuse_from=str(damaged)))
    log = capsys.readouterr().err
    assert re.search(r"shard 2: not copied from .*damaged/shard-00002.array_record, which fails its check \(.*"
                     r"shard-00002.array_record: not a readable ArrayRecord file \(Corrupted Riegeli.*\); encoding it",
                     log)
    assert log.count("copied from") == 4  # 3 copies and the refusal
    assert folder_bytes(repaired) == folder_bytes(reference)


def test_a_folder_whose_export_never_finished_a_shard_is_taken_over(make_config, tmp_path, capsys, corpus_file):
    """A corpus error stops the first run after its manifest is written; once the corpus is fixed, the rerun (another
    corpus size, so another export) takes the folder over instead of asking for it to be deleted."""
    folder = tmp_path / "out"
    broken = tmp_path / "broken" / corpus_file.name
    broken.parent.mkdir()
    lines = corpus_file.read_text(encoding="utf-8").splitlines(keepends=True)
    broken.write_bytes(b"".join(line.encode() for line in lines[:5]) + b"\xff\xfe not utf-8\n")
    assert export.main(make_config(folder, broken)) == 2
    assert json.loads((folder / "manifest.json").read_text())["status"] == records.STATUS_IN_PROGRESS
    assert not list(folder.glob("shard-*.json"))
    capsys.readouterr()
    shutil.copy(corpus_file, broken)  # the fix: the same texts as the reference
    assert export.main(make_config(folder, broken)) == 0
    log = capsys.readouterr().err
    assert "holds an unfinished export of another configuration with no finished shard" in log
    assert "this export starts over there" in log
    fresh = tmp_path / "fresh"
    export.run_export(make_config(fresh, broken))
    assert folder_bytes(folder) == folder_bytes(fresh)


def test_a_lone_surrogate_escape_names_its_line_and_the_unfinished_folder(make_config, corpus_file, tmp_path, capsys):
    """JSON's "\\ud800" decodes to half of a UTF-16 pair, which no tokenizer or UTF-8 file takes. Met after two
    shards, it stops the export naming the file and line and what is left of the folder; with the line fixed (to
    an escape of the same length, so the corpus keeps its size), the same command resumes."""
    texts = [line for line in corpus_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": text}) for text in texts]
    lines[9] = json.dumps({"text": "broken \ud800 text"})  # json.dumps writes the escape: "broken \ud800 text"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    folder = tmp_path / "out"
    config = make_config(folder, corpus, **{"corpus.kind": "jsonl", "corpus.text_field": "text"})
    assert export.main(config) == 2
    error = one_line_error(capsys)
    assert error.startswith(f"error: {corpus}:10: field 'text' holds a lone surrogate escape (\\ud800 at character 8)")
    assert f"The export in {folder} stopped there, unfinished (its manifest says in_progress" in error
    assert json.loads((folder / records.MANIFEST_NAME).read_text())["status"] == "in_progress"
    lines[9] = lines[9].replace("\\ud800", "\\ufffd")
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert export.main(config) == 0
    assert "resuming: 2 shards" in capsys.readouterr().err
