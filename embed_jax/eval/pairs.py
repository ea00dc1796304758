"""Similarity on the user's own scored pairs: `--tasks=pairs:FILE`, FILE a .tsv, .csv or .jsonl of text1, text2, score
(any numeric scale: the metrics are correlations).

    .tsv / .csv   a header line naming the columns text1, text2, score (sentence1, sentence2 also read, as STS-B
                  writes them), then one pair a line; other columns are ignored
    .jsonl        {"text1": ..., "text2": ..., "score": ...} one pair a line

Metrics: Spearman and Pearson correlation between the cosine of the two texts' vectors and the score
(embed_jax.eval.metrics, as the built-in Lee task). Every malformed line is an error naming the file and the line.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from embed_jax.eval import metrics
from embed_jax.eval.tasks import Task, TaskDataError, TaskResult, TextVectors

COLUMNS = ("text1", "text2", "score")
ALIASES = {"sentence1": "text1", "sentence2": "text2"}
DELIMITERS = {".tsv": "\t", ".csv": ","}


def number(value, path: Path, line: int) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TaskDataError(f"{path} line {line}: score {value!r} is not a number") from None
    if not math.isfinite(score):
        raise TaskDataError(f"{path} line {line}: score {value!r} is not a finite number")
    return score


def read_delimited(path: Path, delimiter: str) -> list[tuple[str, str, float]]:
    with path.open(encoding="utf-8", newline="") as lines:
        reader = csv.reader(lines, delimiter=delimiter)
        header = [ALIASES.get(cell.strip().lower(), cell.strip().lower()) for cell in next(reader, [])]
        missing = [name for name in COLUMNS if name not in header]
        if missing:
            raise TaskDataError(f"{path} line 1: the header {header} lacks {', '.join(missing)}; the first line must "
                                f"name the columns {', '.join(COLUMNS)}")
        columns = [header.index(name) for name in COLUMNS]
        pairs = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise TaskDataError(f"{path} line {reader.line_num}: {len(row)} columns, the header has {len(header)}")
            text1, text2, score = (row[column] for column in columns)
            pairs.append((text1, text2, number(score, path, reader.line_num)))
    return pairs


def read_jsonl(path: Path) -> list[tuple[str, str, float]]:
    pairs = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskDataError(f"{path} line {line_number}: not JSON ({error.msg})") from error
            row = {ALIASES.get(key, key): value for key, value in row.items()} if isinstance(row, dict) else {}
            if not isinstance(row.get("text1"), str) or not isinstance(row.get("text2"), str) or "score" not in row:
                raise TaskDataError(f"{path} line {line_number}: expected an object with string \"text1\", "
                                    "\"text2\" and a \"score\"")
            pairs.append((row["text1"], row["text2"], number(row["score"], path, line_number)))
    return pairs


def read_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskDataError(f"pairs:{path}: no such file; give a .tsv, .csv or .jsonl of {', '.join(COLUMNS)}")
    suffix = path.suffix.lower()
    if suffix in DELIMITERS:
        pairs = read_delimited(path, DELIMITERS[suffix])
    elif suffix in (".jsonl", ".json"):
        pairs = read_jsonl(path)
    else:
        raise TaskDataError(f"pairs:{path}: the file name must end in .tsv, .csv or .jsonl (it says the format)")
    if len(pairs) < 3:
        raise TaskDataError(f"{path}: {len(pairs)} pair(s); a correlation needs at least 3")
    if len({score for _, _, score in pairs}) == 1:
        raise TaskDataError(f"{path}: every pair has the same score, so no correlation is defined")
    return pairs


class ScoredPairs(Task):
    metric_names = ("spearman", "pearson")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.pairs = read_pairs(path)
        self.description = f"scored pairs {self.path}: correlation of cosine with the score"

    def texts(self):
        return [text for text1, text2, _ in self.pairs for text in (text1, text2)]

    def score(self, vectors: TextVectors) -> TaskResult:
        first = metrics.unit_rows(vectors.rows([text1 for text1, _, _ in self.pairs]))
        second = metrics.unit_rows(vectors.rows([text2 for _, text2, _ in self.pairs]))
        cosines = np.sum(first * second, axis=1)
        gold = np.array([score for _, _, score in self.pairs])
        return TaskResult(
            metrics={"spearman": metrics.spearman(cosines, gold), "pearson": metrics.pearson(cosines, gold)},
            counts={"pairs": len(self.pairs)})


def from_spec(argument: str) -> ScoredPairs:
    """`FILE` (the part after pairs:)."""
    return ScoredPairs(argument)
