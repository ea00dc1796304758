"""WordNet definition retrieval on the held-out synsets (`corpora.wordnet_holdout()`, about 10% of WordNet 3.0).

`wordnet_retrieval` (in the default suite) is the hold-out below. `wordnet_validation` is the same task on the
validation split (`corpora.wordnet_validation()`: training-side synsets, not in the default suite), for choosing
recipe knobs (e.g. the teacher weights, scripts/teacher_weights.py) without looking at the hold-out. Its texts are
training texts, so a student's score there measures fit, not generalisation: score teachers and targets on it.

Queries: every usage example of a held-out synset (4,886), one query per (synset, example).
Corpus:  the distinct definitions of all held-out synsets (11,785 texts from 11,812 synsets: a few synsets share
         a gloss, e.g. "a genus of bacteria"; a shared gloss is one corpus entry), in WordNet file order.
Relevant: the definition of the example's own synset, exactly one corpus entry per query.
Metrics: R@1, R@10 and MRR@10 over all queries (ties broken by corpus order, so the ranking is deterministic).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from embed_jax.data import corpora
from embed_jax.eval import metrics
from embed_jax.eval.tasks import Task, TaskResult, TextVectors

# Query rows scored at once: 512 × 11,785 float64 scores ≈ 48 MB.
QUERY_CHUNK = 512


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    queries: tuple[str, ...]
    corpus: tuple[str, ...]
    relevant: np.ndarray  # (num_queries,) index into corpus
    synsets: int  # held-out synsets that give at least one query


HOLDOUT, VALIDATION = "holdout", "validation"
SPLITS = {HOLDOUT: corpora.wordnet_holdout, VALIDATION: corpora.wordnet_validation}


@functools.lru_cache(maxsize=2)
def definition_retrieval_set(split: str = HOLDOUT) -> RetrievalSet:
    synsets = SPLITS[split]()
    corpus_index: dict[str, int] = {}
    for synset in synsets:
        corpus_index.setdefault(synset.definition, len(corpus_index))
    queries, relevant = [], []
    for synset in synsets:
        for example in synset.examples:
            queries.append(example)
            relevant.append(corpus_index[synset.definition])
    return RetrievalSet(queries=tuple(queries), corpus=tuple(corpus_index), relevant=np.array(relevant),
                        synsets=sum(1 for synset in synsets if synset.examples))


class WordNetRetrieval(Task):
    metric_names = ("recall@1", "recall@10", "mrr@10")
    description = "WordNet: usage example → its synset's definition among all held-out definitions"
    retrieval = True
    split = HOLDOUT

    def texts(self):
        retrieval = definition_retrieval_set(self.split)
        return retrieval.queries + retrieval.corpus

    def score(self, vectors: TextVectors) -> TaskResult:
        retrieval = definition_retrieval_set(self.split)
        queries, corpus = vectors.retrieval(retrieval.queries, retrieval.corpus)
        ranks = np.concatenate([
            metrics.rank_of_relevant(queries[start:start + QUERY_CHUNK] @ corpus.T,
                                     retrieval.relevant[start:start + QUERY_CHUNK])
            for start in range(0, len(queries), QUERY_CHUNK)])
        return TaskResult(
            metrics={"recall@1": metrics.recall_at_k(ranks, 1), "recall@10": metrics.recall_at_k(ranks, 10),
                     "mrr@10": metrics.mrr_at_k(ranks, 10)},
            counts={"queries": len(retrieval.queries), "corpus": len(retrieval.corpus),
                    "query_synsets": retrieval.synsets})


class WordNetValidation(WordNetRetrieval):
    description = ("WordNet validation split (training-side synsets, for choosing recipe knobs): usage example → "
                   "its synset's definition among the split's definitions")
    split = VALIDATION
