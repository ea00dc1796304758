"""Evaluation on the user's own data: a BEIR folder and a scored pairs file, written here from real WordNet text and
scored with the real all-MiniLM-L6-v2 through `python -m embed_jax.eval --tasks=beir:...,pairs:...`; the metrics on
vectors whose answers are known; malformed files named with their line; the bar chart beside the table."""
import json

import numpy as np
import pytest

from embed_jax.data import corpora
from embed_jax.eval import beir, pairs, report, tasks
from embed_jax.eval.__main__ import main
from embed_jax.eval.tasks import TaskDataError, TextVectors


def held_out_synsets(count: int):
    return [synset for synset in corpora.wordnet_holdout() if synset.examples][:count]


def write_beir(folder, synsets, qrels_rows=None):
    """Queries: each synset's first usage example; documents: the definitions (word as title); qrels: own synset."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as corpus:
        for number, synset in enumerate(synsets):
            corpus.write(json.dumps({"_id": f"d{number}", "title": synset.key.split(".")[0].replace("_", " "),
                                     "text": synset.definition}) + "\n")
    with (folder / "queries.jsonl").open("w") as queries:
        for number, synset in enumerate(synsets):
            queries.write(json.dumps({"_id": f"q{number}", "text": synset.examples[0]}) + "\n")
    rows = qrels_rows or [f"q{number}\td{number}\t1" for number in range(len(synsets))]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def write_pairs(path, synsets):
    """A synset's example with its own definition scores 5, with the next synset's definition 0."""
    lines = ["text1\ttext2\tscore"]
    for number, synset in enumerate(synsets):
        lines.append(f"{synset.examples[0]}\t{synset.definition}\t5")
        lines.append(f"{synset.examples[0]}\t{synsets[(number + 1) % len(synsets)].definition}\t0")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("beir") / "wordnet_mini", held_out_synsets(40))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs") / "wordnet_pairs.tsv", held_out_synsets(30))


@pytest.mark.slow
def test_minilm_on_a_beir_folder_and_a_pairs_file(beir_folder, pairs_file, tmp_path):
    code = main(["--model=asset:all-MiniLM-L6-v2", f"--out={tmp_path}",
                 f"--tasks=beir:{beir_folder},pairs:{pairs_file}", "--no_cache"])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (row,) = results["rows"]
    metrics = {key.rpartition("/")[2]: value for key, value in row["metrics"].items()}
    assert set(metrics) == {"ndcg@10", "recall@1", "recall@10", "mrr@10", "spearman", "pearson"}  # 40 < 100 docs
    assert 0.4 < metrics["recall@1"] <= metrics["recall@10"] <= 1.0 and metrics["recall@10"] > 0.7
    assert metrics["recall@1"] <= metrics["mrr@10"] <= metrics["recall@10"]
    assert metrics["spearman"] > 0.5 and metrics["pearson"] > 0.5
    assert row["counts"][f"beir:{beir_folder}"] == {"queries": 40, "corpus": 40, "relevant": 40,
                                                    "queries_without_relevant": 0}
    table = (tmp_path / "results.md").read_text()
    assert "wordnet_mini nDCG@10" in table and "wordnet_pairs.tsv Spearman" in table
    assert "![" in table and (tmp_path / report.CHART_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_beir_metrics_on_known_rankings(tmp_path):
    """Query 0 finds its one document first; query 1 has two relevant documents, ranked 2nd and 3rd of 4; query 2's
    qrels are all 0, so it scores 0 and counts in the mean, as BEIR's evaluator (pytrec_eval) counts it."""
    synsets = held_out_synsets(4)
    folder = write_beir(tmp_path / "b", synsets, ["q0\td0\t1", "q1\td2\t2", "q1\td3\t1", "q2\td1\t0"])
    task = beir.from_spec(f"{folder}:test")
    assert task.metric_names == ("ndcg@10", "recall@1", "mrr@10")  # R@10 needs 10 documents
    data = task.data
    assert data.query_ids == ("q0", "q1", "q2")  # q2 has no relevant document: BEIR keeps it; q3 is not in qrels
    texts = list(dict.fromkeys(task.texts()))
    index = {text: row for row, text in enumerate(texts)}
    matrix = np.zeros((len(texts), 4), dtype=np.float32)
    for row in range(4):
        matrix[index[data.corpus[row]], row] = 1.0
    matrix[index[data.queries[0]]] = [1.0, 0.1, 0.0, 0.0]
    matrix[index[data.queries[1]]] = [0.9, 0.0, 0.5, 0.1]  # ranking d0, d2, d3, d1
    matrix[index[data.queries[2]]] = [0.0, 1.0, 0.0, 0.0]  # finds d1, which its qrels score 0
    result = task.score(TextVectors(index, matrix))
    dcg, ideal = 2 / np.log2(3) + 1 / np.log2(4), 2 + 1 / np.log2(3)
    assert result.metrics["recall@1"] == pytest.approx(1 / 3)
    assert result.metrics["mrr@10"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert result.metrics["ndcg@10"] == pytest.approx((1 + dcg / ideal + 0) / 3)
    assert result.counts["queries_without_relevant"] == 1


def test_spec_forms_and_unknown_prefix(beir_folder, pairs_file):
    loaded = tasks.load_tasks([f"beir:{beir_folder}", f"pairs:{pairs_file}", "lee_similarity"])
    assert [task.name for task in loaded] == [f"beir:{beir_folder}", f"pairs:{pairs_file}", "lee_similarity"]
    assert loaded[1].metric_names == ("spearman", "pearson")
    with pytest.raises(tasks.UnknownTaskError, match=r"beir:FOLDER\[:SPLIT\], pairs:FILE, mteb:TASKNAME"):
        tasks.load_tasks(["hub:STS12"])  # mteb: is a prefix now (tests/eval/test_mteb.py); hub: is none


def test_csv_and_jsonl_pairs_read_alike(tmp_path):
    rows = [("a cat", "a kitten", 4.5), ("a cat", "a car", 1.0), ("a dog", "a puppy", 4.0)]
    (tmp_path / "p.csv").write_text("sentence1,sentence2,score\n" + "\n".join(f"{a},{b},{s}" for a, b, s in rows))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"text1": a, "text2": b, "score": s}) for a, b, s in rows))
    assert pairs.read_pairs(tmp_path / "p.csv") == pairs.read_pairs(tmp_path / "p.jsonl") == rows


# ---------------------------------------------------------------------------------------------------- bad input


def test_a_beir_folder_missing_a_file(tmp_path):
    folder = write_beir(tmp_path / "b", held_out_synsets(3))
    (folder / "queries.jsonl").unlink()
    with pytest.raises(TaskDataError, match=r"queries.jsonl: no such file; a BEIR folder holds corpus.jsonl"):
        tasks.load_tasks([f"beir:{folder}"])


def test_a_missing_split_names_the_ones_there(tmp_path):
    folder = write_beir(tmp_path / "b", held_out_synsets(3))
    with pytest.raises(TaskDataError, match=r"dev.tsv: no such file \(splits here: test\)"):
        tasks.load_tasks([f"beir:{folder}:dev"])


def test_a_qrels_row_naming_an_unknown_document(tmp_path):
    folder = write_beir(tmp_path / "b", held_out_synsets(3), ["q0\td0\t1", "q1\td7\t1"])
    with pytest.raises(TaskDataError, match=r"test.tsv line 3: corpus-id 'd7' is not in corpus.jsonl"):
        tasks.load_tasks([f"beir:{folder}"])


def test_a_corpus_line_that_is_not_json(tmp_path):
    folder = write_beir(tmp_path / "b", held_out_synsets(3))
    with (folder / "corpus.jsonl").open("a") as corpus:
        corpus.write("{broken\n")
    with pytest.raises(TaskDataError, match=r"corpus.jsonl line 4: not JSON"):
        tasks.load_tasks([f"beir:{folder}"])


def test_a_pairs_file_with_a_non_numeric_score(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("text1\ttext2\tscore\na\tb\t1\nc\td\thigh\ne\tf\t0\n")
    with pytest.raises(TaskDataError, match=r"p.tsv line 3: score 'high' is not a number"):
        tasks.load_tasks([f"pairs:{path}"])


def test_a_pairs_file_without_its_header(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("a\tb\t1\nc\td\t2\ne\tf\t0\n")
    with pytest.raises(TaskDataError, match=r"p.tsv line 1: the header .* lacks text1, text2, score"):
        tasks.load_tasks([f"pairs:{path}"])


def test_the_chart_is_written_beside_the_table(tmp_path):
    results = {"tasks": {"pairs:/x/mine.tsv": {"description": "", "metrics": ["spearman", "pearson"],
                                                "counts": {"pairs": 3}}},
               "headline": {"metrics": []},
               "rows": [{"model": model, "head": head, "dim": 8, "default_head": head == "fc1",
                         "metrics": {"pairs:/x/mine.tsv/spearman": value, "pairs:/x/mine.tsv/pearson": value / 2},
                         "mean": None, "holdout": {"status": "external"}, "source": {}}
                        for model, head, value in (("a", "fc1", 0.8), ("a", "fc2", 0.6), ("b", "default", 0.7))]}
    report.write_report(results, tmp_path)
    assert (tmp_path / report.CHART_FILE).stat().st_size > 1000
    assert "mine.tsv Spearman" in (tmp_path / report.MARKDOWN_FILE).read_text()
