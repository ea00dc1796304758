"""Every refusal of `python -m embed_jax.eval`: what was wrong, where, and what to do; exit code 2, no report."""
import json
import shutil

import pytest

import kit

from embed_jax.data import corpora
from embed_jax.convert import hf_export, onnx_graph
from embed_jax.train.workdir import RUN_CONFIG_FILE
from embed_jax.eval.__main__ import main

LEE = "--tasks=lee_similarity"


def run(capsys, *arguments):
    code = main(list(arguments))
    return code, capsys.readouterr().err


def export_folder(tmp_path, tiny_st, records_dirs):
    """An exported folder as embed_jax.convert.hf writes it: a stella folder plus embed_jax_export.json."""
    folder = tmp_path / "exported"
    shutil.copytree(tiny_st, folder)
    (folder / hf_export.EXPORT_FILE).write_text(json.dumps({
        "format_version": 1, "heads": [16, 8], "default_head": 16,
        "training_records": [{"records_dir": str(path), "num_records": 20, "corpus_fingerprint": "unused"}
                             for path in records_dirs]}))
    return folder


def test_unknown_spec_lists_the_spec_forms(tmp_path, capsys):
    code, err = run(capsys, "--model=hub:bert-base-uncased", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2
    assert "'hub:bert-base-uncased'" in err and "is not a folder" in err and "concat:SPEC+SPEC" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_unknown_asset_names_the_bundled_ones(tmp_path, capsys):
    code, err = run(capsys, "--model=asset:bert-base", f"--out={tmp_path}", LEE)
    assert code == 2 and "asset:all-MiniLM-L6-v2" in err and "asset:all-mpnet-base-v2" in err


@pytest.mark.parametrize("spec, message", [
    ("concat:asset:all-MiniLM-L6-v2", "concat needs two or more specs"),
    ("pca:asset:all-MiniLM-L6-v2", "write pca:SPEC@DIM"),
    ("pca:asset:all-MiniLM-L6-v2@half", "write pca:SPEC@DIM"),
    ("concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2@0.2,0.3,0.5", "write one weight per part after '@', "
                                                                          "comma-separated in the parts' order (2 "
                                                                          "parts)"),
    ("concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2@a,b", "write one weight per part after '@'"),
    ("concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2@-1,2", "every teacher weight must be a finite number "
                                                                   "≥ 0"),
    ("concat:asset:all-MiniLM-L6-v2+asset:all-mpnet-base-v2@0,0", "the teacher weights sum to 0"),
])
def test_malformed_concat_and_pca_specs(tmp_path, capsys, spec, message):
    code, err = run(capsys, f"--model={spec}", f"--out={tmp_path}", LEE)
    assert code == 2 and message in err


def test_folder_without_a_tokenizer_is_named_with_what_is_missing(tmp_path, capsys, tiny_st):
    folder = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_st, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (folder / name).unlink()
    code, err = run(capsys, f"--model={folder}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2
    assert f"{folder} has no tokenizer" in err and "tokenizer.json" in err and "save_pretrained" in err


@pytest.mark.slow
def test_stage_whose_tokenizer_folder_lost_its_tokenizer(tmp_path, capsys, tiny_workdir, tiny_bert):
    workdir = tmp_path / "train"
    shutil.copytree(tiny_workdir, workdir)
    tokenizer_folder = tmp_path / "init_copy"
    shutil.copytree(tiny_bert, tokenizer_folder)
    (tokenizer_folder / "tokenizer.json").unlink()
    config = json.loads((workdir / RUN_CONFIG_FILE).read_text())
    config["model"]["init_from"] = str(tokenizer_folder)
    (workdir / RUN_CONFIG_FILE).write_text(json.dumps(config))
    code, err = run(capsys, f"--model={workdir}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2
    assert f"{tokenizer_folder}" in err and "has no tokenizer.json" in err and "model.init_from" in err


def test_plain_hugging_face_folder_is_refused_with_a_hint(tmp_path, capsys, tiny_bert):
    code, err = run(capsys, f"--model={tiny_bert}", f"--out={tmp_path}", LEE)
    assert code == 2 and "modules.json" in err and "plain Hugging Face model" in err


def test_unknown_task(tmp_path, capsys):
    code, err = run(capsys, "--model=asset:all-MiniLM-L6-v2", f"--out={tmp_path}", "--tasks=lee_similarity,mteb")
    assert code == 2 and "'mteb'" in err and "wordnet_retrieval" in err


def test_foreign_results_file_in_the_output_folder_is_left_alone(tmp_path, capsys, tiny_st):
    (tmp_path / "results.json").write_text('{"mine": true}')
    code, err = run(capsys, f"--model={tiny_st}", f"--out={tmp_path}", LEE)
    assert code == 2 and "not written by embed_jax.eval" in err
    assert (tmp_path / "results.json").read_text() == '{"mine": true}'


# ------------------------------------------------------------------------------------------ hold-out overlap


def test_records_with_held_out_ids_are_refused_naming_the_ids_and_the_folder(tmp_path, capsys, tiny_st,
                                                                                id_overlap_records):
    folder = export_folder(tmp_path, tiny_st, [id_overlap_records])
    code, err = run(capsys, f"--model={folder}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2
    first = corpora.wordnet_holdout()[0].key
    assert str(id_overlap_records.resolve()) in err and f"'wordnet:{first}:definition' (held-out id)" in err
    assert "2 of 20 records" in err and "--allow_overlap" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_onnx_graph_is_checked_through_the_folder_it_was_exported_from(tmp_path, capsys, tiny_st, tiny_onnx,
                                                                          id_overlap_records):
    folder = export_folder(tmp_path, tiny_st, [id_overlap_records])
    graph = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, graph)
    record = json.loads((graph / onnx_graph.RECORD_FILE).read_text())
    (graph / onnx_graph.RECORD_FILE).write_text(json.dumps({**record, "source": str(folder)}))
    code, err = run(capsys, f"--model={graph / onnx_graph.INT8_FILE}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2 and "(held-out id)" in err and str(id_overlap_records.resolve()) in err


def test_records_with_a_held_out_text_under_another_id_are_refused(tmp_path, capsys, tiny_st,
                                                                   text_overlap_records):
    folder = export_folder(tmp_path, tiny_st, [text_overlap_records])
    code, err = run(capsys, f"--model={folder}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2 and "'my_corpus:12' (held-out text)" in err and "1 of 20 records" in err


@pytest.mark.slow
def test_workdir_trained_on_overlapping_records_is_refused_through_its_run_config(tmp_path, capsys, tiny_workdir,
                                                                                   text_overlap_records):
    workdir = tmp_path / "train"
    shutil.copytree(tiny_workdir, workdir)
    config = json.loads((workdir / RUN_CONFIG_FILE).read_text())
    config["data"]["records_dir"] = str(text_overlap_records)
    (workdir / RUN_CONFIG_FILE).write_text(json.dumps(config))
    code, err = run(capsys, f"--model={workdir / 'stage1'}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2 and "'my_corpus:12' (held-out text)" in err and str(text_overlap_records.resolve()) in err


@pytest.mark.slow
def test_allow_overlap_scores_and_marks_the_rows(tmp_path, capsys, tiny_st, clean_records, id_overlap_records):
    folder = export_folder(tmp_path, tiny_st, [clean_records, id_overlap_records])
    out = tmp_path / "out"
    code, _ = run(capsys, f"--model={folder}", f"--out={out}", LEE, "--allow_overlap")
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {row["holdout"]["status"] for row in rows} == {"overlap-allowed"}
    assert rows[0]["holdout"]["records_checked"] == 60 and rows[0]["holdout"]["num_offending"] == 2
    assert "‡" in (out / "results.md").read_text()


def test_clean_export_is_checked_and_marked_clean(tmp_path, capsys, tiny_st, clean_records):
    folder = export_folder(tmp_path, tiny_st, [clean_records])
    out = tmp_path / "out"
    assert run(capsys, f"--model={folder}", f"--out={out}", LEE)[0] == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["holdout"]["status"] == "clean" and row["holdout"]["records_checked"] == 40


def test_export_json_without_training_records_names_the_key(tmp_path, capsys, tiny_st):
    folder = export_folder(tmp_path, tiny_st, [])
    code, err = run(capsys, f"--model={folder}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 2 and "training_records" in err and hf_export.EXPORT_FILE in err


def test_records_that_moved_leave_the_rows_unchecked_with_a_warning(tmp_path, capsys, tiny_st):
    folder = export_folder(tmp_path, tiny_st, [tmp_path / "gone"])
    out = tmp_path / "out"
    code, err = run(capsys, f"--model={folder}", f"--out={out}", LEE)
    assert code == 0 and "unchecked" in err and str(tmp_path / "gone") in err
    assert "†" in (out / "results.md").read_text()


@pytest.mark.slow
def test_workdir_without_run_config_finds_its_records_by_fingerprint_or_says_unchecked(tmp_path, capsys,
                                                                                     tiny_workdir, clean_records):
    workdir = tmp_path / "train"
    shutil.copytree(tiny_workdir, workdir)
    (workdir / RUN_CONFIG_FILE).unlink()
    code, err = run(capsys, f"--model={workdir}", f"--out={tmp_path / 'unchecked'}", LEE)
    assert code == 0 and "unchecked" in err and "were not found" in err
    shutil.copytree(clean_records, tmp_path / "records")  # where the exporter looks: beside the workdir
    assert run(capsys, f"--model={workdir}", f"--out={tmp_path / 'found'}", LEE)[0] == 0
    holdout = json.loads((tmp_path / "found" / "results.json").read_text())["rows"][0]["holdout"]
    assert holdout["status"] == "clean" and holdout["records_dirs"] == [str((tmp_path / "records").resolve())]


def test_export_without_located_records_is_unchecked(tmp_path, capsys, tiny_st):
    folder = export_folder(tmp_path, tiny_st, [])
    (folder / hf_export.EXPORT_FILE).write_text(json.dumps({"training_records": [
        {"records_dir": None, "num_records": None, "corpus_fingerprint": "abc"}]}))
    code, err = run(capsys, f"--model={folder}", f"--out={tmp_path / 'out'}", LEE)
    assert code == 0 and "--skip_records" in err


# ------------------------------------------------------------------------------------------ the --out folder


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, tiny_st):
    out = tmp_path / "results"
    out.write_text("mine")
    code, err = run(capsys, f"--model={tiny_st}", f"--out={out}", LEE)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --out={out} is a file, not a folder; choose a folder for --out"]
    code, err = run(capsys, f"--model={tiny_st}", f"--out={out / 'under'}", LEE)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --out={out / 'under'}: cannot write {out / 'under'}: Not a directory (ENOTDIR); choose another --out "
        "or make it writable"]
    assert out.read_text() == "mine"


def test_read_only_out_is_refused_before_any_work(tmp_path, capsys, tiny_st):
    with kit.mounted_tmpfs(tmp_path / "read_only", "ro,size=1M") as folder:
        code, err = run(capsys, f"--model={tiny_st}", f"--out={folder / 'eval'}", LEE)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --out={folder / 'eval'}: cannot write {folder / 'eval'}: Read-only file system (EROFS); choose "
        "another --out or make it writable"]


def test_a_full_disk_while_writing_the_chart_is_one_line_and_exit_1(tmp_path, capsys, tiny_st):
    """results.png is a link to /dev/full, where every write fails with ENOSPC, as on a full disk."""
    (tmp_path / "results.png").symlink_to("/dev/full")
    code, err = run(capsys, f"--model={tiny_st}", f"--out={tmp_path}", LEE)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: --out={tmp_path}: cannot write {tmp_path / 'results.png'}: No space left on device (ENOSPC); free "
        "space there (or choose another --out), then run the same command again")
