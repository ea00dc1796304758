"""`--tasks=mteb:TASKNAME` (embed_jax/eval/mteb_task.py) on the mock tasks mteb ships (mteb.mocks: in-memory texts,
no download), with the tiny stella-style folder: every head scored by mteb's own evaluator, the default head's score
equal to mteb scoring `SentenceTransformer(folder)` itself; unknown, non-text and unloadable tasks refused before any
model loads. Skipped when the mteb extra is not installed, except the refusal that says to install it."""
import json
import sys

import pytest

from embed_jax.eval import mteb_task, tasks
from embed_jax.eval.__main__ import main

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow

RETRIEVAL, STS = "MockRetrievalTask", "MockSTSTask"


@pytest.fixture(scope="module")
def mteb():
    return pytest.importorskip("mteb")


def run(capsys, *arguments):
    code = main(list(arguments))
    return code, capsys.readouterr().err


def test_every_head_is_scored_by_mteb_and_the_default_head_as_mteb_scores_the_folder(mteb, tiny_st, tmp_path):
    from sentence_transformers import SentenceTransformer

    code = main([f"--model={tiny_st}", f"--out={tmp_path}", f"--tasks=mteb:{RETRIEVAL},mteb:{STS},lee_similarity",
                 "--quantize=int8"])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    key = f"mteb:{RETRIEVAL}/ndcg_at_10"
    floats = [row for row in results["rows"] if row["precision"] == "float32"]
    assert [row["head"] for row in floats] == ["16", "8", "pooled"]
    for row in floats:
        assert 0.0 <= row["metrics"][key] <= 1.0 and -1.0 <= row["metrics"][f"mteb:{STS}/cosine_spearman"] <= 1.0
        assert "lee_similarity/spearman" in row["metrics"]
    assert results["tasks"][f"mteb:{RETRIEVAL}"]["counts"] == {"splits": 2, "subsets": 2}
    for row in results["rows"]:
        if row["precision"] != "float32":  # mteb scores with its own similarity: no quantised rows
            assert f"mteb:{RETRIEVAL}" in row["skipped_tasks"] and key not in row["metrics"]
    (default,) = [row for row in floats if row["default_head"]]
    folder_result = mteb.evaluate(SentenceTransformer(str(tiny_st), device="cpu"), mteb_task.resolve(RETRIEVAL),
                                  cache=None, co2_tracker=False, show_progress_bar=False)
    assert default["metrics"][key] == pytest.approx(folder_result.task_results[0].get_score(), abs=1e-6)
    assert f"{RETRIEVAL} ndcg_at_10" in (tmp_path / "results.md").read_text()


def test_a_suite_of_mteb_tasks_only_embeds_nothing_up_front(mteb, tiny_st, tmp_path):
    assert main([f"--model={tiny_st}", f"--out={tmp_path}", f"--tasks=mteb:{STS}", "--no_cache"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["texts_encoded_per_model"] == 0
    assert all(f"mteb:{STS}/cosine_spearman" in row["metrics"] for row in results["rows"])


def test_unknown_mteb_task_says_how_to_list_the_names(mteb, tmp_path, capsys):
    code, err = run(capsys, "--model=/no/such/model", f"--out={tmp_path}", "--tasks=mteb:NoSuchTask")
    assert code == 2 and "mteb:NoSuchTask" in err and "mteb.get_tasks()" in err and "MOCK_TASK_REGISTRY" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "results.json").exists()


def test_an_image_task_is_refused(mteb, tmp_path, capsys):
    code, err = run(capsys, "--model=/no/such/model", f"--out={tmp_path}", "--tasks=mteb:VisualSTS17Eng")
    assert code == 2 and "only text tasks run here" in err


def test_a_task_whose_data_cannot_be_loaded_is_refused_before_any_model(mteb, tmp_path, capsys, monkeypatch):
    task = mteb_task.resolve(STS)

    def offline(**kwargs):
        raise ConnectionError("Couldn't reach 'mteb/stsbenchmark-sts' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(task, "load_data", offline)
    monkeypatch.setattr(mteb_task, "resolve", lambda name: task)
    code, err = run(capsys, "--model=/no/such/model", f"--out={tmp_path}", f"--tasks=mteb:{STS}")
    assert code == 2 and "could not load the task's data (ConnectionError" in err and "Hugging Face hub" in err


def test_without_the_mteb_package_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", None)  # `import mteb` raises ImportError
    with pytest.raises(tasks.UnknownTaskError, match=r"pip install -e '\.\[mteb\]'"):
        tasks.load_tasks([f"mteb:{STS}"])
