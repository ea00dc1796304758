"""Bad input to the exporter, each with a clear error and nothing of the user's touched; the command line on a
workdir written by the real training loop; the model card's evaluation table."""
import json
import shutil
import subprocess
import sys

import jax.numpy as jnp
import pytest
from flax import nnx

import kit
from embed_jax.convert import hf_export, model_card, st_export
from embed_jax.models.student import Student


@pytest.fixture(scope="module")
def tiny_workdir(teacher_records, fingerprint, tiny_bert):
    """Beside the records (found without --records_dir): stage1 with FC1 only, stage3 with a reduction head too."""
    workdir = teacher_records.parent / "tiny_train"
    for stage, reduction in (("stage1", []), ("stage3", [8])):
        student = Student.from_pretrained(tiny_bert, heads={"teacher_dim": 16, "reduction_dims": reduction},
                                          rngs=nnx.Rngs(0))
        kit.write_stage(workdir, stage, student, init_from=str(tiny_bert), records_fingerprint=fingerprint)
    return workdir


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------------- the output


def test_existing_folder_is_refused_without_overwrite(tiny_workdir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        st_export.export(tiny_workdir, out)
    assert listing(out) == ["notes.txt"]


def test_overwrite_refuses_a_folder_no_export_wrote(tiny_workdir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not a folder written by embed_jax.convert.hf"):
        st_export.export(tiny_workdir, out, overwrite=True)
    assert (out / "config.json").read_text() == "{}"


def test_overwrite_replaces_the_previous_export_and_keeps_the_users_files(tiny_workdir, tmp_path):
    out = tmp_path / "out"
    st_export.export(tiny_workdir, out, stage="stage3")
    assert (out / "2_Dense_8").is_dir()
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()
    (out / "eval" / "scores.json").write_text("[]")
    st_export.export(tiny_workdir, out, stage="stage1", overwrite=True)
    record = json.loads((out / hf_export.EXPORT_FILE).read_text())
    assert record["source"]["stage"] == "stage1" and record["heads"] == [16]
    assert not (out / "2_Dense_8").exists()  # the previous export's head is gone with it
    assert (out / "notes.txt").read_text() == "mine" and (out / "eval" / "scores.json").read_text() == "[]"
    assert sorted(record["files"] + ["notes.txt", "eval/scores.json"]) == [
        name for name in listing(out) if (out / name).is_file()]


def test_overwrite_never_replaces_a_file_the_previous_export_did_not_write(tiny_workdir, tmp_path):
    out = tmp_path / "out"
    st_export.export(tiny_workdir, out, stage="stage1")
    (out / "2_Dense_8").mkdir()
    (out / "2_Dense_8" / "config.json").write_text("my own head")
    with pytest.raises(FileExistsError, match="2_Dense_8/config.json"):
        st_export.export(tiny_workdir, out, stage="stage3", overwrite=True)
    assert (out / "2_Dense_8" / "config.json").read_text() == "my own head"
    assert json.loads((out / hf_export.EXPORT_FILE).read_text())["source"]["stage"] == "stage1"  # untouched


# ---------------------------------------------------------------------------------------------------- the workdir


def test_workdir_without_checkpoint_is_named(tmp_path, tiny_workdir):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        st_export.export(tmp_path, tmp_path / "out")
    untrained = tmp_path / "run"
    (untrained / "stage1").mkdir(parents=True)
    shutil.copy(tiny_workdir / "stage1" / "student_config.json", untrained / "stage1")
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        st_export.export(untrained, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        st_export.export(tmp_path / "absent", tmp_path / "out")


def test_missing_stage_lists_the_trained_ones(tiny_workdir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--stage=stage2: .* trained stages: stage1, stage3"):
        st_export.export(tiny_workdir, tmp_path / "out", stage="stage2")
    with pytest.raises(FileNotFoundError, match=r"--step=4: .* has steps \[3\]"):
        st_export.export(tiny_workdir, tmp_path / "out", step=4)


def copy_stage_with_config(tiny_workdir, tmp_path, edit):
    workdir = tmp_path / "train"
    shutil.copytree(tiny_workdir / "stage1", workdir / "stage1")
    config_path = workdir / "stage1" / "student_config.json"
    config = json.loads(config_path.read_text())
    edit(config)
    config_path.write_text(json.dumps(config))
    return workdir


def test_unknown_backbone_is_named(tiny_workdir, tmp_path):
    workdir = copy_stage_with_config(tiny_workdir, tmp_path,
                                     lambda config: config["text_encoder"].update(model_type="t5"))
    with pytest.raises(hf_export.ExportError, match=r"stage1/student_config.json: text encoder model_type 't5' "
                                                    r"has no exporter; supported .*bert.*gpt2.*qwen2"):
        st_export.export(workdir, tmp_path / "out")


def test_unknown_head_kind_is_named(tiny_workdir, tmp_path):
    workdir = copy_stage_with_config(tiny_workdir, tmp_path, lambda config: config["heads"].update(kind="mlp"))
    with pytest.raises(ValueError, match=r"heads has unknown key\(s\) \['kind'\]"):
        st_export.export(workdir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_parameters_the_exporter_does_not_know_are_named(tiny_bert):
    student = Student.from_pretrained(tiny_bert, heads={"teacher_dim": 16}, rngs=nnx.Rngs(0))
    student.heads.gate = nnx.Param(jnp.ones((16,)))
    with pytest.raises(hf_export.ExportError, match=r"does not know: heads\.gate"):
        hf_export.split_params(hf_export.flat_params(student))


def test_missing_tokenizer_names_the_flag(tiny_workdir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"--tokenizer=.*holds no tokenizer.*Pass --tokenizer=FOLDER"):
        st_export.export(tiny_workdir, tmp_path / "out", tokenizer=str(tmp_path / "empty"))


def test_records_that_cannot_be_found_are_named(tiny_workdir, tmp_path, fingerprint):
    elsewhere = tmp_path / "far" / "train"
    shutil.copytree(tiny_workdir, elsewhere)
    with pytest.raises(FileNotFoundError, match=f"{fingerprint}.*--records_dir=FOLDER"):
        st_export.export(elsewhere, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="--records_dir=.*no manifest.json"):
        st_export.export(elsewhere, tmp_path / "out", records_dirs=[str(tmp_path)])
    st_export.export(elsewhere, tmp_path / "out", skip_records=True)
    record = json.loads((tmp_path / "out" / hf_export.EXPORT_FILE).read_text())
    assert record["training_records"] == [{"records_dir": None, "num_records": None,
                                           "corpus_fingerprint": fingerprint}]


def test_default_head_must_be_a_head(tiny_workdir, tmp_path):
    with pytest.raises(ValueError, match="--default_head=5: the student's heads are 16, 8"):
        st_export.export(tiny_workdir, tmp_path / "out", default_head=5)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- model card


def test_evaluation_table_is_rendered_tolerantly(tmp_path):
    rows = [{"model": "student", "head": 1152, "lee/spearman": 0.51234, "wordnet/r@10": 0.3},
            {"model": "all-MiniLM-L6-v2", "head": None, "lee/spearman": 0.508, "note": "teacher"}]
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"rows": rows}))
    table = model_card.markdown_table(model_card.read_eval_rows(path))
    assert table.splitlines() == [
        "| model | head | lee/spearman | wordnet/r@10 | note |", "|---|---|---|---|---|",
        "| student | 1152 | 0.5123 | 0.3000 |  |", "| all-MiniLM-L6-v2 |  | 0.5080 |  | teacher |"]
    path.write_text(json.dumps(rows))  # a bare list works too
    assert model_card.read_eval_rows(path) == rows
    path.write_text(json.dumps({"results": 3}))
    with pytest.raises(ValueError, match="eval.json: expected a list of rows"):
        model_card.read_eval_rows(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="eval.json line 1: not valid JSON"):
        model_card.read_eval_rows(path)


def evaluation_report(tmp_path):
    """results.json, results.md and results.png as python -m embed_jax.eval writes them (its own writer)."""
    from embed_jax.eval import report

    def row(model, head, dim, precision, metrics):
        return {"model": model, "kind": "flax-student", "head": head, "dim": dim, "default_head": head == "16",
                "precision": precision, "metrics": metrics,
                "mean": 0.5 if "lee_similarity/spearman" in metrics else None, "counts": {}, "skipped_tasks": {},
                "holdout": {"status": "clean"}, "source": {}}

    results = {"tasks": {"lee_similarity": {"description": "", "metrics": ["spearman"], "counts": {}},
                         "lee_retrieval": {"description": "", "metrics": ["ndcg@10"], "counts": {}}},
               "headline": {"metrics": []},
               "rows": [row("runs/x/train", "16", 16, "float32",
                            {"lee_similarity/spearman": 0.41, "lee_retrieval/ndcg@10": 0.8}),
                        row("runs/x/train", "16", 16, "int8", {"lee_retrieval/ndcg@10": 0.79})]}
    json_path, _ = report.write_report(results, tmp_path / "eval")
    return json_path


def test_card_shows_the_evaluation_table_and_chart_of_embed_jax_eval(tiny_workdir, tmp_path):
    from embed_jax.eval import report

    assert model_card.EVAL_CHART_FILE == report.CHART_FILE
    eval_json = evaluation_report(tmp_path)
    out = tmp_path / "out"
    st_export.export(tiny_workdir, out, eval_json=str(eval_json))
    card = (out / "README.md").read_text()
    evaluation = card[card.index("## Evaluation"):]
    assert f"![evaluation: each model and head, per task metric]({model_card.CARD_CHART_FILE})" in evaluation
    assert (out / model_card.CARD_CHART_FILE).read_bytes() == (eval_json.parent / report.CHART_FILE).read_bytes()
    assert (out / model_card.CARD_CHART_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert model_card.CARD_CHART_FILE in json.loads((out / hf_export.EXPORT_FILE).read_text())["files"]
    table = [line for line in evaluation.splitlines() if line.startswith("|")]
    assert table[0] == "| model | head | dim | Lee Spearman | Lee nDCG@10 | mean |"  # the evaluation's titles
    assert table[2:] == ["| runs/x/train | 16 | 16 | 0.4100 | 0.8000 | 0.5000 |",
                         "| runs/x/train | 16 · int8 | 16 |  | 0.7900 |  |"]


def test_card_without_a_chart_beside_the_json_has_only_the_table(tiny_workdir, tmp_path):
    eval_json = evaluation_report(tmp_path)
    (eval_json.parent / model_card.EVAL_CHART_FILE).unlink()
    out = tmp_path / "out"
    st_export.export(tiny_workdir, out, eval_json=str(eval_json))
    card = (out / "README.md").read_text()
    assert "## Evaluation" in card and "![evaluation" not in card
    assert not (out / model_card.CARD_CHART_FILE).exists()


# ---------------------------------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_command_line_exports_what_the_training_loop_wrote(tmp_path, teacher_records, tiny_bert):
    """configs/distill.py:smoke, one stage of one step, run by the real loop; then the command as users type it."""
    from embed_jax.train import loop

    config = kit.load_config_file("distill", "smoke")
    config.model.init_from = str(tiny_bert)
    config.model.teacher_dim = 384
    config.data.teacher_weights = ""  # the fixture records' own teachers, equally
    config.data.records_dir = str(teacher_records)
    config.stage_order = ("stage1",)
    config.stage1.fc1_init = ""  # the tiny init folder is none of the records' teachers
    config.stage1.num_steps = 2  # 1 step leaves the warm-up-then-cosine schedule no decay steps (optax refuses)
    loop.train_and_evaluate(config, tmp_path / "train")
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps([{"model": "student", "head": 384, "lee/spearman": 0.25}]))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "embed_jax.convert.hf", f"--workdir={tmp_path / 'train'}", f"--out={out}",
               f"--records_dir={teacher_records}", f"--eval_json={eval_json}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out} from stage1 step 2: heads 384, default 384" in result.stdout
    assert "| student | 384 | 0.2500 |" in (out / "README.md").read_text()
    assert json.loads((out / hf_export.EXPORT_FILE).read_text())["student_config"] == json.loads(
        (tmp_path / "train" / "stage1" / "student_config.json").read_text())
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "exists and is not empty. Pass --overwrite" in again.stderr


def test_loading_a_folder_that_holds_no_student_says_how_to_load_it(tmp_path):
    (tmp_path / hf_export.EXPORT_FILE).write_text(json.dumps({"format_version": 1, "student_config": None}))
    with pytest.raises(ValueError, match=r"describes no embed_jax Student .* load it with SentenceTransformer"):
        hf_export.load_exported(tmp_path)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_folder(tiny_workdir, tmp_path, capsys):
    """A real 256 KiB file system: the tiny student's weights (~4 MB of safetensors) do not fit."""
    from embed_jax.convert import hf

    with kit.mounted_tmpfs(tmp_path / "small_disk", "size=256k") as disk:
        code = hf.main([f"--workdir={tiny_workdir}", f"--out={disk / 'model'}", "--skip_records"])
        left = sorted(path.name for path in disk.iterdir())
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"error: --out={disk / 'model'}: cannot write {disk}/"), err
    assert err.strip().endswith(": No space left on device (ENOSPC); free space there (or choose another --out), then "
                                "run the same command again"), err
    assert left == []  # the half-written staging folder is removed
