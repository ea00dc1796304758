"""Asymmetric rows (asym:QUERY|DOC, asym:STUDENT) on a tiny trained student: retrieval scored with the student's FC1
queries against the teacher side's documents, checked against a brute-force ranking; and the specs it refuses."""
import json
from pathlib import Path

import numpy as np
import kit
import pytest

from embed_jax.eval import __main__ as eval_main
from embed_jax.eval import lee, metrics
from embed_jax.eval.encoding import EncodeContext, encode
from embed_jax.eval.specs import ModelLoader

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow


LEE_TASKS = "--tasks=lee_similarity,lee_retrieval"


def run_eval(tmp_path, *arguments):
    out = tmp_path / "eval"
    code = eval_main.main([f"--out={out}", "--progress_every_s=0", *arguments])
    return code, out


def rows_of(out: Path, model: str) -> list[dict]:
    return [row for row in json.loads((out / "results.json").read_text())["rows"] if row["model"] == model]


def brute_force_lee_ndcg(queries: np.ndarray, documents: np.ndarray) -> float:
    """Each Lee document's student vector ranks the other 49 documents' teacher vectors by cosine."""
    human = lee.human_similarity()
    values = []
    for query in range(len(human)):
        others = [other for other in range(len(human)) if other != query]
        scores = [float(np.dot(queries[query], documents[other]) /
                        (np.linalg.norm(queries[query]) * np.linalg.norm(documents[other]))) for other in others]
        values.append(metrics.ndcg_at_k(np.array(scores), human[query, others], lee.NDCG_K))
    return float(np.mean(values))


def test_asymmetric_row_scores_student_queries_against_teacher_documents(tmp_path, tiny_workdir, tiny_st):
    teacher = f"concat:{tiny_st}+{tiny_st}"  # 2 × 16 = 32-d: the tiny student's FC1 dimension
    spec = f"asym:{tiny_workdir}|{teacher}"
    code, out = run_eval(tmp_path, LEE_TASKS, f"--model={tiny_workdir}", f"--model={spec}", "--quantize=binary")
    assert code == 0
    (row, binary_row) = rows_of(out, spec)
    assert (row["kind"], row["head"], row["dim"], row["precision"]) == ("asymmetric", "32→concat", 32, "float32")
    assert set(row["metrics"]) == {"lee_retrieval/ndcg@10"} and row["mean"] is None
    assert row["skipped_tasks"] == {"lee_similarity": "asymmetric rows score retrieval tasks only"}
    assert row["source"]["queries"] == {"spec": str(tiny_workdir), "head": "32"}
    assert binary_row["precision"] == "binary" and set(binary_row["metrics"]) == {"lee_retrieval/ndcg@10"}

    loader, context = ModelLoader(EncodeContext()), EncodeContext()
    documents = list(lee.lee_documents())
    student_queries = encode(loader.load(str(tiny_workdir)), documents, context)["32"]
    teacher_documents = encode(loader.load(teacher), documents, context)["concat"]
    expected = brute_force_lee_ndcg(student_queries, teacher_documents)
    assert row["metrics"]["lee_retrieval/ndcg@10"] == pytest.approx(expected, abs=1e-9)
    symmetric = rows_of(out, str(tiny_workdir))[0]
    assert symmetric["metrics"]["lee_retrieval/ndcg@10"] != pytest.approx(expected, abs=1e-6)

    table = (out / "results.md").read_text()
    asym_line = next(line for line in table.splitlines() if line.startswith(f"| `asym:{tiny_workdir}\\|"))
    assert asym_line.split(" | ")[1:5] == ["32→concat", "32", "—", "—"]  # head, dim, Lee Spearman, Lee Pearson


def test_query_and_document_dimensions_must_agree(tmp_path, capsys, tiny_workdir, tiny_st):
    code, out = run_eval(tmp_path, LEE_TASKS, f"--model=asym:{tiny_workdir}|{tiny_st}")
    assert code != 0 and not (out / "results.json").exists()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"error: model spec 'asym:{tiny_workdir}|{tiny_st}': the documents ({tiny_st}, head "
                     f"16) are 16-d but no head of the queries' model {tiny_workdir} is (its "
                     f"heads: 32-d, 8-d, pooled 32-d); pair a student with the teacher target its FC1 learned.")


@pytest.mark.parametrize("spec", ["asym:", "asym:|asset:all-MiniLM-L6-v2", "asym:asset:all-MiniLM-L6-v2|",
                                  "asym:asym:a|b"])
def test_malformed_asymmetric_specs(tmp_path, capsys, spec):
    code, _ = run_eval(tmp_path, LEE_TASKS, f"--model={spec}")
    assert code != 0
    assert "write asym:QUERY_SPEC|DOC_SPEC" in capsys.readouterr().err


def test_student_alone_takes_its_teachers_from_its_records(tmp_path, capsys, tiny_workdir, tiny_bert):
    """The tiny workdir's teacher is a plain Hugging Face folder: asym:STUDENT finds it and says why it cannot
    load it."""
    code, _ = run_eval(tmp_path, LEE_TASKS, f"--model=asym:{tiny_workdir}")
    assert code != 0
    error = capsys.readouterr().err
    assert f"its documents' model '{tiny_bert}'" in error and "plain Hugging Face model" in error


def test_asymmetric_student_alone_is_paired_with_its_recorded_teacher(tmp_path, st_teacher_workdir, tiny_st):
    spec = f"asym:{st_teacher_workdir}"
    code, out = run_eval(tmp_path, LEE_TASKS, f"--model={spec}")
    assert code == 0
    (row,) = rows_of(out, spec)
    assert row["head"] == "16→16" and row["dim"] == 16
    assert row["source"]["documents"]["spec"] == str(tiny_st)
    assert "manifest" in row["source"]["documents"]["from"]
    assert set(row["metrics"]) == {"lee_retrieval/ndcg@10"}


def two_teacher_records_folder(folder: Path) -> Path:
    """A finished records folder of two teachers holding no shard (teachers_spec reads only its manifest)."""
    from embed_jax.data import records

    folder.mkdir(parents=True)
    manifest = records.Manifest(
        schema_version=records.SCHEMA_VERSION, export_id="x", status=records.STATUS_COMPLETE,
        teachers=tuple(records.TeacherInfo(name=name, path=f"/models/{name}", dim=dim, pooling="auto", prompt="",
                                           max_seq_length=128, weights_sha256="", order=index)
                       for index, (name, dim) in enumerate((("minilm", 384), ("mpnet", 768)))),
        teacher_dim=1152, dtype="float16", normalisation=records.NORMALISATION, corpus={}, shard_size=32)
    (folder / records.MANIFEST_NAME).write_text(manifest.to_json())
    return folder


@pytest.mark.parametrize("weights,suffix", [("", ""), ("minilm=1,mpnet=1", ""), ("mpnet=3,minilm=1", "@0.25,0.75")])
def test_asymmetric_student_alone_documents_are_its_runs_weighted_target(tmp_path, weights, suffix):
    """asym:STUDENT pairs a student with the target it learned: its run's data.teacher_weights (config.json)."""
    from types import SimpleNamespace

    from embed_jax.eval.specs import teachers_spec

    folder = two_teacher_records_folder(tmp_path / "records")
    (tmp_path / "run" / "stage1").mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"data": {"records_dir": str(folder),
                                                                       "teacher_weights": weights}}))
    student = SimpleNamespace(spec="run", stage_dir=tmp_path / "run" / "stage1",
                              holdout=SimpleNamespace(records_dirs=[str(folder)], note=""))
    assert teachers_spec("asym:run", student) == f"concat:/models/minilm+/models/mpnet{suffix}"
