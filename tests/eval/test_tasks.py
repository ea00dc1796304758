"""The hold-out tasks: their data, the wiring of queries to answers, and the real Lee figure of ASSETS.md."""
import json

import numpy as np
import pytest

from embed_jax.data import corpora
from embed_jax.eval import lee, tasks, wordnet
from embed_jax.eval.__main__ import main
from embed_jax.eval.tasks import TextVectors


def test_lee_matrix_is_symmetric_with_the_file_upper_triangle():
    human = lee.human_similarity()
    assert human.shape == (50, 50) and len(lee.lee_documents()) == 50
    assert np.array_equal(human, human.T) and np.all(np.diag(human) == 0)
    pairs = human[np.triu_indices(50, 1)]
    assert len(pairs) == 1225 and pairs.min() >= 0 and pairs.max() <= 1


def test_wordnet_set_uses_only_held_out_synsets_and_points_each_example_at_its_own_definition():
    retrieval = wordnet.definition_retrieval_set()
    synsets = corpora.wordnet_holdout()
    assert all(corpora.is_held_out_synset(synset.key) for synset in synsets)
    assert len(retrieval.queries) == sum(len(synset.examples) for synset in synsets)
    assert len(retrieval.corpus) == len({synset.definition for synset in synsets})
    expected = [(example, synset.definition) for synset in synsets for example in synset.examples]
    assert [(query, retrieval.corpus[answer]) for query, answer in zip(retrieval.queries, retrieval.relevant)] \
        == expected


def test_wordnet_validation_split_is_training_side_deterministic_and_shaped_like_the_hold_out():
    """wordnet_validation: training-side synsets only, no held-out text anywhere, about the hold-out's size, and
    not in the default suite (it is for choosing recipe knobs)."""
    validation = wordnet.definition_retrieval_set(wordnet.VALIDATION)
    synsets = corpora.wordnet_validation()
    assert synsets and not any(corpora.is_held_out_synset(synset.key) for synset in synsets)
    held_out = corpora.holdout_folded_texts()
    assert not any(corpora.fold(text) in held_out for text in validation.queries + validation.corpus)
    training = {item.text for item in corpora.wordnet_texts()}
    assert set(validation.queries + validation.corpus) <= training
    assert (len(validation.queries), len(validation.corpus), validation.synsets) == (4368, 10581, 2943)
    assert [(query, validation.corpus[answer]) for query, answer in zip(validation.queries, validation.relevant)] \
        == [(example, synset.definition) for synset in synsets for example in synset.examples]
    task = tasks.load_task("wordnet_validation")
    assert task.split == wordnet.VALIDATION and "wordnet_validation" not in tasks.DEFAULT_TASKS


def synthetic_vectors(task, answer_of_query) -> TextVectors:
    """Random unit vectors for every text; each query gets the vector of corpus entry answer_of_query[i]."""
    retrieval = wordnet.definition_retrieval_set()
    texts = list(dict.fromkeys(task.texts()))
    index = {text: row for row, text in enumerate(texts)}
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(texts), 16)).astype(np.float32)
    for query, answer in zip(retrieval.queries, answer_of_query):
        matrix[index[query]] = matrix[index[retrieval.corpus[answer]]]
    return TextVectors(index, matrix)


def test_wordnet_scores_perfect_when_each_query_sits_on_its_answer_and_zero_when_shifted():
    task = tasks.load_task("wordnet_retrieval")
    relevant = wordnet.definition_retrieval_set().relevant
    perfect = task.score(synthetic_vectors(task, relevant))
    # WordNet repeats two usage examples under two synsets each: one text, one vector, two answers, so one of each
    # pair must miss (the vector is its last synset's answer).
    last_answer = dict(zip(wordnet.definition_retrieval_set().queries, relevant))
    hits = np.mean([last_answer[query] == answer
                    for query, answer in zip(wordnet.definition_retrieval_set().queries, relevant)])
    assert 0.999 < hits < 1
    assert perfect.metrics == pytest.approx({"recall@1": hits, "recall@10": hits, "mrr@10": hits})
    assert perfect.counts["queries"] == len(relevant) and perfect.counts["corpus"] == len(
        wordnet.definition_retrieval_set().corpus)
    shifted = task.score(synthetic_vectors(task, (relevant + 1) % len(wordnet.definition_retrieval_set().corpus)))
    assert shifted.metrics["recall@1"] == 0.0


def test_unknown_task_names_the_known_ones():
    with pytest.raises(tasks.UnknownTaskError, match="lee_similarity.*wordnet_retrieval"):
        tasks.load_tasks(["lee_similarity", "sts_benchmark"])


@pytest.mark.slow
def test_all_minilm_l6_v2_reproduces_the_lee_figures_of_assets_md(tmp_path, capsys):
    """The real model, the real command: ASSETS.md measured Spearman 0.508, Pearson 0.656, nDCG@10 0.869."""
    code = main(["--model=asset:all-MiniLM-L6-v2", f"--out={tmp_path}", "--tasks=lee_similarity,lee_retrieval",
                 "--no_cache"])
    assert code == 0
    report = json.loads((tmp_path / "results.json").read_text())
    (row,) = report["rows"]
    assert abs(row["metrics"]["lee_similarity/spearman"] - 0.508) < 0.005
    assert abs(row["metrics"]["lee_similarity/pearson"] - 0.656) < 0.005
    assert abs(row["metrics"]["lee_retrieval/ndcg@10"] - 0.869) < 0.005
    assert row["counts"]["lee_similarity"] == {"documents": 50, "pairs": 1225}
    assert row["holdout"]["status"] == "external" and row["dim"] == 384
    assert "| `asset:all-MiniLM-L6-v2` | — | 384 | 0.508 | 0.656 | 0.869 |" in (tmp_path / "results.md").read_text()


class FakeImageSet(tasks.Task):
    """A task that embeds images (as the vision zero-shot task will): models without an image path skip it."""

    metric_names = ("accuracy",)

    def texts(self):
        return ["a handwritten digit seven"]

    def images(self):
        return {"digits": np.zeros((2, 8, 8, 3), dtype=np.float32)}

    def score(self, vectors):
        raise AssertionError("a text-only model must not be scored on an image task")


def test_image_task_is_skipped_for_a_text_only_model_with_the_reason(tmp_path, tiny_st, monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "fake_images", FakeImageSet)
    assert main([f"--model={tiny_st}", f"--out={tmp_path}", "--tasks=lee_similarity,fake_images"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert all("no image path" in row["skipped_tasks"]["fake_images"] for row in rows)
    assert all("lee_similarity/spearman" in row["metrics"] for row in rows)
