"""Retrieval on the user's own data, in BEIR's folder format: `--tasks=beir:FOLDER[:SPLIT]` (SPLIT default test).

    FOLDER/corpus.jsonl         {"_id": ..., "title": ..., "text": ...} one document a line (title optional)
    FOLDER/queries.jsonl        {"_id": ..., "text": ...} one query a line
    FOLDER/qrels/SPLIT.tsv      query-id <tab> corpus-id <tab> score, with that header line (BEIR's layout)

A document is embedded as "title text" (BEIR's and sentence-transformers' InformationRetrievalEvaluator's join).
Queries are those the qrels name (BEIR's loader keeps exactly these); one whose rows all score 0 has no relevant
document and scores 0 in every metric, as BEIR's evaluator (pytrec_eval) counts it, and the report says how many
there were. The corpus is every document. Metrics, ranking the whole corpus by cosine (ties by corpus order):
- ndcg@10: graded, the qrels score as linear gain (embed_jax.eval.metrics.ndcg_at_k, as the built-in Lee task);
- recall@k for k in 1, 10, 100 that fit the corpus: the share of a query's relevant documents in its top k, averaged
  over queries (BEIR's recall);
- mrr@10: reciprocal rank of the first relevant document within the top 10.

Every malformed line is an error naming the file and the line.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from embed_jax.eval import metrics
from embed_jax.eval.tasks import Task, TaskDataError, TaskResult, TextVectors

DEFAULT_SPLIT = "test"
RECALL_KS = (1, 10, 100)
NDCG_K = MRR_K = 10
QUERY_CHUNK = 512  # query rows scored at once (as embed_jax/eval/wordnet.py)
QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclasses.dataclass(frozen=True)
class BeirSet:
    corpus_ids: tuple[str, ...]
    corpus: tuple[str, ...]  # the texts embedded, in corpus.jsonl order
    query_ids: tuple[str, ...]
    queries: tuple[str, ...]
    gains: tuple[dict[int, float], ...]  # per query: {corpus row: qrels score > 0}; {} when its qrels are all 0


def read_jsonl(path: Path, text_keys: tuple[str, ...]) -> dict[str, str]:
    """{_id: text} of a BEIR jsonl file; the text joins `text_keys` that are present (title, text)."""
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file; a BEIR folder holds corpus.jsonl, queries.jsonl and "
                            "qrels/<split>.tsv (https://github.com/beir-cellar/beir's layout)")
    rows: dict[str, str] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskDataError(f"{path} line {number}: not JSON ({error.msg})") from error
            if not isinstance(row, dict) or "_id" not in row or not isinstance(row.get("text"), str):
                raise TaskDataError(f"{path} line {number}: expected an object with \"_id\" and a string \"text\"")
            key = str(row["_id"])
            if key in rows:
                raise TaskDataError(f"{path} line {number}: _id {key!r} appears twice")
            rows[key] = " ".join(str(row[name]).strip() for name in text_keys if row.get(name)).strip()
    if not rows:
        raise TaskDataError(f"{path}: no rows")
    return rows


def read_qrels(path: Path, query_ids: set[str], corpus_index: dict[str, int]) -> dict[str, dict[int, float]]:
    """{query id: {corpus row: score}} of the rows with score > 0, every query the qrels name ({} when its rows
    all score 0)."""
    if not path.is_file():
        splits = sorted(file.stem for file in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise TaskDataError(f"{path}: no such file (splits here: {', '.join(splits) or 'none'}); give the split as "
                            "beir:FOLDER:SPLIT")
    relevant: dict[str, dict[int, float]] = {}
    with path.open(encoding="utf-8", newline="") as lines:
        for number, row in enumerate(csv.reader(lines, delimiter="\t"), start=1):
            if not row or (number == 1 and tuple(cell.strip() for cell in row) == QRELS_HEADER):
                continue
            if len(row) != 3:
                raise TaskDataError(f"{path} line {number}: expected 3 tab-separated columns "
                                    f"({', '.join(QRELS_HEADER)}), found {len(row)}")
            query, document, score_text = (cell.strip() for cell in row)
            try:
                score = float(score_text)
            except ValueError:
                raise TaskDataError(f"{path} line {number}: score {score_text!r} is not a number") from None
            if query not in query_ids:
                raise TaskDataError(f"{path} line {number}: query-id {query!r} is not in queries.jsonl")
            if document not in corpus_index:
                raise TaskDataError(f"{path} line {number}: corpus-id {document!r} is not in corpus.jsonl")
            judged = relevant.setdefault(query, {})
            if score > 0:
                judged[corpus_index[document]] = score
    if not any(relevant.values()):
        raise TaskDataError(f"{path}: no row with a score > 0, so no query has a relevant document")
    return relevant


def read_beir(folder: str | Path, split: str = DEFAULT_SPLIT) -> BeirSet:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise TaskDataError(f"beir:{folder}: not a folder; give a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    corpus = read_jsonl(folder / "corpus.jsonl", ("title", "text"))
    queries = read_jsonl(folder / "queries.jsonl", ("text",))
    corpus_index = {key: row for row, key in enumerate(corpus)}
    relevant = read_qrels(folder / "qrels" / f"{split}.tsv", set(queries), corpus_index)
    query_ids = tuple(key for key in queries if key in relevant)
    return BeirSet(corpus_ids=tuple(corpus), corpus=tuple(corpus.values()), query_ids=query_ids,
                   queries=tuple(queries[key] for key in query_ids),
                   gains=tuple(relevant[key] for key in query_ids))


def recall_ks(corpus_size: int) -> tuple[int, ...]:
    """R@1 always; R@10 and R@100 when the corpus has that many documents (else they would be trivially 1)."""
    return tuple(k for k in RECALL_KS if k == 1 or k <= corpus_size)


def query_scores(ranking: np.ndarray, gains: dict[int, float], scores: np.ndarray, ks: tuple[int, ...]) -> dict:
    """One query's metrics, given its ranked corpus rows (best first) and its cosine row."""
    gain_row = np.zeros(len(scores))
    gain_row[list(gains)] = list(gains.values())
    hits = np.isin(ranking, list(gains))
    first = int(np.argmax(hits)) + 1 if hits.any() else len(ranking) + 1
    if not gains:  # qrels all 0: BEIR (pytrec_eval) scores such a query 0 and averages it in
        return {f"ndcg@{NDCG_K}": 0.0, f"mrr@{MRR_K}": 0.0, **{f"recall@{k}": 0.0 for k in ks}}
    values = {f"ndcg@{NDCG_K}": metrics.ndcg_at_k(scores, gain_row, NDCG_K),
              f"mrr@{MRR_K}": 1.0 / first if first <= MRR_K else 0.0}
    values.update({f"recall@{k}": float(hits[:k].sum()) / len(gains) for k in ks})
    return values


class BeirRetrieval(Task):
    description = "BEIR-format retrieval folder"
    retrieval = True

    def __init__(self, folder: str | Path, split: str = DEFAULT_SPLIT):
        self.folder, self.split = Path(folder), split
        self.data = read_beir(folder, split)
        self.ks = recall_ks(len(self.data.corpus))
        self.metric_names = (f"ndcg@{NDCG_K}",) + tuple(f"recall@{k}" for k in self.ks) + (f"mrr@{MRR_K}",)
        self.description = f"BEIR folder {self.folder} ({split}): queries → documents"

    def texts(self):
        return self.data.queries + self.data.corpus

    def score(self, vectors: TextVectors) -> TaskResult:
        queries, corpus = vectors.retrieval(self.data.queries, self.data.corpus)
        per_query = []
        for start in range(0, len(queries), QUERY_CHUNK):
            block = queries[start:start + QUERY_CHUNK] @ corpus.T
            for offset, scores in enumerate(block):
                ranking = np.argsort(-scores, kind="stable")
                per_query.append(query_scores(ranking, self.data.gains[start + offset], scores, self.ks))
        return TaskResult(metrics={name: float(np.mean([row[name] for row in per_query]))
                                   for name in self.metric_names},
                          counts={"queries": len(self.data.queries), "corpus": len(self.data.corpus),
                                  "relevant": sum(len(gains) for gains in self.data.gains),
                                  "queries_without_relevant": sum(not gains for gains in self.data.gains)})


def from_spec(argument: str) -> BeirRetrieval:
    """`FOLDER` or `FOLDER:SPLIT` (the part after beir:)."""
    if Path(argument).expanduser().is_dir() or ":" not in argument:
        return BeirRetrieval(argument)
    folder, _, split = argument.rpartition(":")
    return BeirRetrieval(folder, split or DEFAULT_SPLIT)
