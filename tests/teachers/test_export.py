"""The teacher export end to end: real teachers, real files, interrupted and resumed for real."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from embed_jax.data import records
from embed_jax.data.records import RecordsError
from embed_jax.teachers import encoders, export, reuse, targets
from embed_jax.assets import minilm_path

REPO = Path(__file__).resolve().parents[2]


def read_all(folder: Path) -> list[dict]:
    from array_record.python import array_record_module

    manifest = records.read_manifest(folder)
    out = []
    for path in records.shard_paths(folder, manifest):
        reader = array_record_module.ArrayRecordReader(str(path))
        out.extend(records.decode_record(data) for data in reader.read_all())
        reader.close()
    return out


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_export_writes_the_normalised_concatenation_of_both_teachers(make_config, corpus_file, tmp_path, tiny_bert):
    manifest = export.run_export(make_config(tmp_path / "out", corpus_file))
    lines = corpus_file.read_text(encoding="utf-8").split("\n")[:-1]
    kept = [(f"corpus.txt:{number}", line) for number, line in enumerate(lines, start=1) if line.strip()]

    assert manifest.status == records.STATUS_COMPLETE
    assert manifest.num_records == len(kept) == 15
    assert manifest.skipped_empty == 2
    assert [teacher.name for teacher in manifest.teachers] == ["minilm", "tiny"]
    assert [teacher.dim for teacher in manifest.teachers] == [384, 32]
    assert manifest.teacher_dim == 416
    assert [shard.num_records for shard in manifest.shards] == [4, 4, 4, 3]

    stored = read_all(tmp_path / "out")
    assert [(record["id"], record["text"]) for record in stored] == kept
    texts = [text for _, text in kept]
    # The reference is what a user would compute by hand: ST encode for MiniLM, masked mean of AutoModel for the
    # tiny BERT, each normalised, concatenated, renormalised.
    minilm = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, normalize_embeddings=True)
    tiny = encoders.load_teacher(encoders.TeacherSpec("tiny", str(tiny_bert), "mean"))
    tiny_vectors = np.concatenate([tiny.encode_batch([text]) for text in texts])
    tiny_vectors /= np.linalg.norm(tiny_vectors, axis=1, keepdims=True)
    expected = np.concatenate([minilm, tiny_vectors], axis=1) / np.sqrt(2.0)
    vectors = np.stack([record["teacher"] for record in stored])
    np.testing.assert_allclose(vectors, expected, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors[:, :384], axis=1), np.sqrt(0.5), rtol=1e-5)


def test_float16_storage_rounds_only(make_config, corpus_file, tmp_path):
    export.run_export(make_config(tmp_path / "fp32", corpus_file))
    export.run_export(make_config(tmp_path / "fp16", corpus_file, storage_dtype="float16"))
    fp32 = np.stack([record["teacher"] for record in read_all(tmp_path / "fp32")])
    fp16 = np.stack([record["teacher"] for record in read_all(tmp_path / "fp16")])
    assert fp16.dtype == np.float32
    # float16 keeps 11 significant bits: relative error ≤ 2^-11 per component.
    np.testing.assert_allclose(fp16, fp32, rtol=2.0 ** -11, atol=2.0 ** -24)
    assert not np.array_equal(fp16, fp32)


class Interrupt(KeyboardInterrupt):
    pass


def interrupt_after(monkeypatch, target, name: str, calls: int):
    """Let `target.name` run `calls` times, then raise KeyboardInterrupt (Ctrl-C) from inside the real call path."""
    original = getattr(target, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise Interrupt()
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


@pytest.mark.parametrize("calls", [0, 2, 3])
def test_interrupted_mid_shard_then_resumed_equals_uninterrupted(make_config, corpus_file, tmp_path, monkeypatch,
                                                                   calls):
    reference = tmp_path / "reference"
    export.run_export(make_config(reference, corpus_file))
    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        interrupt_after(patch, encoders.SentenceTransformerTeacher, "encode_batch", calls)
        with pytest.raises(Interrupt):
            export.run_export(make_config(resumed, corpus_file))
    assert json.loads((resumed / "manifest.json").read_text())["status"] == records.STATUS_IN_PROGRESS
    export.run_export(make_config(resumed, corpus_file))
    assert folder_bytes(resumed) == folder_bytes(reference)


@pytest.mark.parametrize("failing_rename", [1, 2, 3, 4])
def test_crash_between_renames_leaves_nothing_half_written(make_config, corpus_file, tmp_path, monkeypatch,
                                                           failing_rename):
    """Files appear by rename: the manifest, then per shard its records and then its sidecar. Crash at each
    rename of shards 0 and 1 (a kill between a shard's two renames leaves records without a sidecar)."""
    reference = tmp_path / "reference"
    export.run_export(make_config(reference, corpus_file))
    crashed = tmp_path / "crashed"
    config = make_config(crashed, corpus_file)
    with monkeypatch.context() as patch:
        interrupt_after(patch, records, "_publish", failing_rename)
        with pytest.raises(Interrupt):
            export.run_export(config)
    leftovers = {path.name for path in crashed.iterdir()}
    assert any(name.endswith(".tmp") or name.endswith(".array_record") for name in leftovers)
    export.run_export(make_config(crashed, corpus_file))
    assert folder_bytes(crashed) == folder_bytes(reference)


@pytest.mark.slow
def test_killed_process_resumes_to_identical_records(tmp_path, shipped_config):
    """SIGKILL a real `python -m embed_jax.teachers.export` run once its second shard is on disk; run it again."""
    from embed_jax.data import corpora

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(item.text for item in corpora.builtin_texts("wordnet", 64)) + "\n", encoding="utf-8")
    # One text per forward: slow enough (seconds) that the kill lands mid-run; the assertion on "resuming" below
    # fails the test, rather than passing it vacuously, if the run had already finished.
    overrides = {"corpus.kind": "text", "corpus.paths": str(corpus), "teacher_order": "minilm", "shard_size": 4,
                 "max_batch_size": 1, "storage_dtype": "float32", "torch_threads": 1}
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "embed_jax.teachers.export", "--config=configs/teachers.py:smoke",
               f"--config.output_dir={killed}"] + [f"--config.{key}={value}" for key, value in overrides.items()]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (killed / "shard-00001.json").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the export wrote no second shard in time"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((killed / "manifest.json").read_text())["status"] == records.STATUS_IN_PROGRESS
    finished = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "resuming: " in finished.stderr

    reference = shipped_config("smoke")
    reference.output_dir = str(tmp_path / "reference")
    for key, value in overrides.items():
        (reference.corpus if key.startswith("corpus.") else reference)[key.removeprefix("corpus.")] = value
    export.run_export(reference)
    assert folder_bytes(killed) == folder_bytes(tmp_path / "reference")
    assert len(read_all(killed)) == 64


def test_rerun_of_a_finished_export_changes_nothing(make_config, corpus_file, tmp_path, capsys):
    config = make_config(tmp_path / "out", corpus_file)
    export.run_export(config)
    before = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in (tmp_path / "out").iterdir()}
    export.run_export(config)
    after = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in (tmp_path / "out").iterdir()}
    assert after == before
    assert "nothing to do" in capsys.readouterr().err


def test_folder_of_another_configuration_is_refused_and_untouched(make_config, corpus_file, tmp_path):
    export.run_export(make_config(tmp_path / "out", corpus_file))
    before = folder_bytes(tmp_path / "out")
    with pytest.raises(RecordsError, match=r"another configuration \(differences: dtype: 'float32' → 'float16'\)\. "
                                           r"Nothing was changed.*output_dir"):
        export.run_export(make_config(tmp_path / "out", corpus_file, storage_dtype="float16"))
    with pytest.raises(RecordsError, match=r"another configuration \(differences: teachers\[0\]\.prompt: '' → "
                                           r"'query: '\)"):
        export.run_export(make_config(tmp_path / "out", corpus_file, **{"teachers.minilm.prompt": "query: "}))
    assert folder_bytes(tmp_path / "out") == before


def test_folder_with_user_files_is_refused(make_config, corpus_file, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RecordsError, match=r"not empty \(notes.txt\).*empty or new output folder"):
        export.run_export(make_config(folder, corpus_file))
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]


def test_corpus_changed_between_runs_is_refused(make_config, corpus_file, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_after(patch, records, "write_shard", 2)
        with pytest.raises(Interrupt):
            export.run_export(make_config(folder, corpus_file))
    original = corpus_file.read_text(encoding="utf-8")
    # Same size, other text: the files' description still matches, the running corpus hash does not.
    corpus_file.write_text(original.replace("a", "e", 1), encoding="utf-8")
    with pytest.raises(export.ExportError, match=r"shard-00000.array_record: the corpus changed"):
        export.run_export(make_config(folder, corpus_file))
    # Another size: refused up front as another configuration.
    corpus_file.write_text(original + "one more line\n", encoding="utf-8")
    with pytest.raises(RecordsError, match=r"another configuration \(differences: corpus\.files\[0\]\.bytes: "):
        export.run_export(make_config(folder, corpus_file))


def test_duplicate_ids_are_refused(make_config, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "text": "one text"}\n{"id": "b", "text": "two"}\n{"id": "a", "text": "three"}\n')
    config = make_config(tmp_path / "out", corpus, **{"corpus.kind": "jsonl", "corpus.id_field": "id"})
    with pytest.raises(export.ExportError, match=r"id 'a' appears twice"):
        export.run_export(config)


@pytest.mark.parametrize("breakage, message", [("nan", "NaN or inf"), ("zero", "zero vector")])
def test_broken_teacher_is_named_with_the_record(make_config, corpus_file, tmp_path, request, breakage, message):
    folder = request.getfixturevalue(f"{breakage}_bert")
    config = make_config(tmp_path / "out", corpus_file, **{"teachers.tiny.path": str(folder),
                                                          "teachers.tiny.pooling": "cls"})
    with pytest.raises(targets.TeacherOutputError, match=rf"teacher 'tiny' returned .*{message}.*'corpus.txt:1'"):
        export.run_export(config)


@pytest.mark.parametrize("key, value, message", [
    ("storage_dtype", "bfloat16", r"storage_dtype='bfloat16'; choose one of float16, float32"),
    ("shard_size", 0, r"shard_size=0 must be positive"),
    ("teacher_order", "minilm,nobody", r"teacher_order names 'nobody', but there is no teachers.nobody"),
    ("teacher_order", "", r"teacher_order is empty"),
    ("teachers.tiny.pooling", "max", r"teachers.tiny.pooling='max'; choose one of auto, mean, cls"),
    ("teachers.tiny.pooling", "auto", r"teachers.tiny.pooling='auto' needs a sentence-transformers folder"),
    ("teachers.tiny.path", "/nonexistent/teacher", r"teachers.tiny.path='/nonexistent/teacher'.*not a folder"),
    ("teachers.tiny.path", "asset:bert-huge", r"teachers.tiny.path='asset:bert-huge'.*unknown bundled model"),
    ("corpus.kind", "csv", r"corpus.kind='csv'; choose one of"),
])
def test_config_errors_name_the_key(make_config, corpus_file, tmp_path, key, value, message):
    config = make_config(tmp_path / "out", corpus_file, **{key: value})
    with pytest.raises(ValueError, match=message):
        export.run_export(config)
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_line_errors(make_config, tmp_path, capsys):
    config = make_config(tmp_path / "out", tmp_path / "missing.txt")
    assert export.main(config) == 2
    assert capsys.readouterr().err.startswith("error: corpus.paths: ")


def test_same_teacher_at_another_path_is_the_same_export(make_config, corpus_file, tmp_path, tiny_bert, capsys):
    import shutil

    export.run_export(make_config(tmp_path / "out", corpus_file))
    moved = shutil.copytree(tiny_bert, tmp_path / "moved_teacher")
    export.run_export(make_config(tmp_path / "out", corpus_file, **{"teachers.tiny.path": str(moved)}))
    assert "nothing to do" in capsys.readouterr().err


def _corpus_prefix(corpus_file: Path, folder: Path, num_lines: int) -> Path:
    """The first lines of the corpus in a file of the same name (ids are `corpus.txt:<line>`: the same texts)."""
    folder.mkdir()
    prefix = folder / corpus_file.name
    prefix.write_text("".join(corpus_file.read_text(encoding="utf-8").splitlines(keepends=True)[:num_lines]),
                      encoding="utf-8")
    return prefix


def _count_encoded_shards(patch) -> list[int]:
    encoded = []
    original = export.encode_shard

    def counting(texts, *args, **kwargs):
        encoded.append(len(texts))
        return original(texts, *args, **kwargs)

    patch.setattr(export, "encode_shard", counting)
    return encoded


def test_reuse_from_grows_an_export_paying_only_for_new_texts(make_config, corpus_file, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    export.run_export(make_config(reference, corpus_file))
    # 10 lines = 8 kept texts (two lines are blank) = the first two shards of 4.
    small_corpus = _corpus_prefix(corpus_file, tmp_path / "small_corpus", 10)
    small = tmp_path / "small"
    export.run_export(make_config(small, small_corpus))
    grown = tmp_path / "grown"
    with monkeypatch.context() as patch:
        encoded = _count_encoded_shards(patch)
        export.run_export(make_config(grown, corpus_file, reuse_from=str(small)))
    assert encoded == [4, 3]  # shards 2 and 3 only (15 kept texts)
    assert folder_bytes(grown) == folder_bytes(reference)


def test_reuse_from_an_unfinished_export_cuts_it_short(make_config, corpus_file, tmp_path, monkeypatch):
    unfinished = tmp_path / "unfinished"
    with monkeypatch.context() as patch:
        interrupt_after(patch, records, "write_shard", 2)
        with pytest.raises(Interrupt):
            export.run_export(make_config(unfinished, corpus_file))
    small_corpus = _corpus_prefix(corpus_file, tmp_path / "small_corpus", 10)
    reference = tmp_path / "reference"
    export.run_export(make_config(reference, small_corpus))
    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        encoded = _count_encoded_shards(patch)
        export.run_export(make_config(cut, small_corpus, reuse_from=f"{unfinished}, {tmp_path / 'reference'}"))
    assert encoded == []
    assert folder_bytes(cut) == folder_bytes(reference)


@pytest.mark.slow
def test_reuse_from_refuses_folders_whose_vectors_differ(make_config, corpus_file, tmp_path):
    other = tmp_path / "float16"
    export.run_export(make_config(other, corpus_file, storage_dtype="float16"))
    with pytest.raises(reuse.ReuseError, match=r"reuse_from: .*float16 was exported with other dtype"):
        export.run_export(make_config(tmp_path / "out", corpus_file, reuse_from=str(other)))
    with pytest.raises(reuse.ReuseError, match=r"reuse_from: .*nowhere holds no manifest.json"):
        export.run_export(make_config(tmp_path / "out2", corpus_file, reuse_from=str(tmp_path / "nowhere")))


@pytest.mark.parametrize("content", ["", "\n\n", "   \n\t\n \n"])
def test_corpus_without_a_text_is_refused_before_any_teacher_loads(make_config, tmp_path, monkeypatch, content):
    corpus = tmp_path / "blank.txt"
    corpus.write_text(content, encoding="utf-8")
    monkeypatch.setattr(encoders, "load_teacher", lambda spec: pytest.fail("a teacher loaded"))
    with pytest.raises(export.ExportError, match=rf"corpus \({corpus}\): no text to export, its {content.count(chr(10))}"
                                                 r" texts are all empty or whitespace-only\. Check corpus.paths"):
        export.run_export(make_config(tmp_path / "out", corpus))
    assert not (tmp_path / "out").exists()
