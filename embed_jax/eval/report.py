"""The evaluation's output files: results.json (everything), results.md (the table) and results.png (the table as a
bar chart, embed_jax/eval/chart.py), in the --out folder.

The folder may already hold an earlier evaluation's output (and its vector cache); those two files are replaced.
Any other results.json / results.md / results.png there (not written by embed_jax.eval) is left alone and the run
refuses.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embed_jax import cli
from embed_jax.eval import chart, overlap, quantized
from embed_jax.eval.tasks import TASK_PREFIXES

FORMAT = "embed_jax.eval/1"
JSON_FILE, MARKDOWN_FILE, CHART_FILE = "results.json", "results.md", "results.png"

# (column title, metric key) of the Markdown table; the JSON holds every metric.
COLUMNS = (
    ("Lee Spearman", "lee_similarity/spearman"),
    ("Lee Pearson", "lee_similarity/pearson"),
    ("Lee nDCG@10", "lee_retrieval/ndcg@10"),
    ("WN R@1", "wordnet_retrieval/recall@1"),
    ("WN R@10", "wordnet_retrieval/recall@10"),
    ("WN MRR@10", "wordnet_retrieval/mrr@10"),
)
# Titles of the metrics of the user's own tasks (beir:, pairs:), whose columns follow the built-in ones.
METRIC_TITLES = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "spearman": "Spearman", "pearson": "Pearson",
                 "recall@1": "R@1", "recall@10": "R@10", "recall@100": "R@100"}
HOLDOUT_MARKS = {overlap.CLEAN: "", overlap.EXTERNAL: "", overlap.UNCHECKED: " †", overlap.OVERLAP_ALLOWED: " ‡"}


class OutputFolderError(ValueError):
    """--out holds files this tool did not write; the message names them."""


def check_output_folder(out_dir: Path) -> None:
    """Refuse to replace a results.json / results.md that an evaluation did not write."""
    json_path, markdown_path = out_dir / JSON_FILE, out_dir / MARKDOWN_FILE
    ours = False
    if json_path.is_file():
        try:
            ours = json.loads(json_path.read_text(encoding="utf-8")).get("format") == FORMAT
        except (json.JSONDecodeError, AttributeError, OSError):
            ours = False
        if not ours:
            raise OutputFolderError(f"{json_path} exists and was not written by embed_jax.eval; nothing was changed. "
                                    f"Choose another --out folder or move that file.")
    for path in (markdown_path, out_dir / CHART_FILE):
        if path.is_file() and not ours:
            raise OutputFolderError(f"{path} exists without an embed_jax.eval {JSON_FILE} beside it; nothing was "
                                    f"changed. Choose another --out folder or move that file.")


def format_value(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def stage_note(row: dict[str, Any]) -> str:
    """' (stage3)' when a workdir spec was resolved to its last stage."""
    stage_dir = row["source"].get("stage_dir")
    if not stage_dir or Path(row["model"]).name == Path(stage_dir).name:
        return ""
    return f" ({Path(stage_dir).name})"


def task_label(name: str) -> str:
    """'scifact:test' for beir:/data/scifact:test, 'sts.tsv' for pairs:/data/sts.tsv; a built-in name unchanged."""
    prefix, _, argument = name.partition(":")
    return Path(argument).name if argument and prefix in TASK_PREFIXES else name


def table_columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, metric key) of every column: the built-in ones present, then each other task's metrics in order."""
    columns = [(title, key) for title, key in COLUMNS if any(key in row["metrics"] for row in report["rows"])]
    known = {key for _, key in COLUMNS}
    for name, task in report["tasks"].items():
        columns += [(f"{task_label(name)} {METRIC_TITLES.get(metric, metric)}", f"{name}/{metric}")
                    for metric in task["metrics"] if f"{name}/{metric}" not in known]
    return columns


def precision_of(row: dict[str, Any]) -> str:
    return row.get("precision", quantized.FLOAT)


def row_label(row: dict[str, Any], report: dict[str, Any]) -> tuple[str, str]:
    """(model cell, head cell) of a table row; a quantised row's head cell ends in its precision ("256 · int8")."""
    several = sum(other["model"] == row["model"] and precision_of(other) == precision_of(row)
                  for other in report["rows"]) > 1
    head = "—" if row["head"] == "default" else row["head"] + (" (default)" if row["default_head"] and several
                                                               else "")
    if precision_of(row) != quantized.FLOAT:
        head = precision_of(row) if head == "—" else f"{head} · {precision_of(row)}"
    model = row["model"].replace("|", "\\|")  # a table cell's pipe, even in code (asym:QUERY|DOC)
    return f"`{model}`{stage_note(row)}{HOLDOUT_MARKS[row['holdout']['status']]}", head


def markdown_table(report: dict[str, Any]) -> str:
    columns = table_columns(report)
    header = ["model", "head", "dim"] + [title for title, _ in columns] + ["mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in report["rows"]:
        model, head = row_label(row, report)
        cells = [model, head, str(row["dim"])]
        cells += [format_value(row["metrics"].get(key)) for _, key in columns]
        cells.append(format_value(row["mean"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The built-in tasks (embed_jax/eval/tasks.py TASKS, digits): scored on the hold-out training never sees.
BUILTIN_HOLDOUT_TASKS = ("lee_similarity", "lee_retrieval", "wordnet_retrieval", "digits_zero_shot")
COUNT_WORDS = {"documents": "documents", "pairs": "scored pairs", "queries": "queries", "corpus": "documents",
               "relevant": "relevant (query, document) pairs", "candidates_per_query": "candidates per query",
               "images": "images", "captions": "captions", "splits": "splits", "subsets": "subsets"}


def counts_text(counts: dict[str, Any]) -> str:
    """'1,000 queries, 10,000 documents' from a task's counts (every count the task reports, in its order)."""
    parts = []
    for key, value in counts.items():
        if key == "queries_without_relevant":
            continue
        text = f"{value:,}" if isinstance(value, int) else str(value)
        parts.append(f"{text} {COUNT_WORDS.get(key, key.replace('_', ' '))}")
    empty = counts.get("queries_without_relevant")
    if empty:
        parts.append(f"{empty:,} of the queries with no relevant document (qrels all 0), scored 0 as BEIR does")
    return ", ".join(parts)


def tasks_lines(report: dict[str, Any]) -> list[str]:
    """One line per task run: its name, what it is, its counts."""
    lines = []
    for name, task in report["tasks"].items():
        counts = counts_text(task.get("counts") or {})
        lines.append(f"- `{task_label(name)}`: {task.get('description') or name}" + (f" ({counts})" if counts else ""))
    return lines


def provenance_lines(report: dict[str, Any]) -> list[str]:
    """Where the tasks' data comes from: the built-in hold-out (checked against training records), the user's."""
    names = list(report["tasks"])
    builtin = [name for name in names if name in BUILTIN_HOLDOUT_TASKS]
    own = [name for name in names if name not in BUILTIN_HOLDOUT_TASKS]
    lines = []
    if builtin:
        lines.append(f"{', '.join(builtin)}: the built-in hold-out, which training never sees (docs/eval.md); each "
                     "embed_jax model's training records are checked against it.")
    if own:
        lines.append(f"{', '.join(task_label(name) for name in own)}: scored as given; nothing checks these against "
                     "a model's training data.")
    return lines


def markdown(report: dict[str, Any]) -> str:
    statuses = {row["holdout"]["status"] for row in report["rows"]}
    notes = []
    if overlap.UNCHECKED in statuses:
        notes.append("† the training records could not be read, so the hold-out overlap is unchecked "
                     "(results.json: holdout.note).")
    if overlap.OVERLAP_ALLOWED in statuses:
        notes.append("‡ trained on records that overlap the hold-out (--allow_overlap): not a fair score.")
    if any(row.get("kind") == "asymmetric" for row in report["rows"]):
        notes.append("asym: rows (head QUERY→DOCUMENT) rank documents encoded by the second model for queries encoded "
                     "by the first; they score retrieval tasks only (— elsewhere).")
    if any(precision_of(row) != quantized.FLOAT for row in report["rows"]):
        notes.append("· int8 / · binary rows score quantised vectors (sentence-transformers' quantize_embeddings): "
                     "int8 calibrated on each task's documents, integer dot product; binary by Hamming distance. "
                     "Retrieval tasks only (— elsewhere); docs/eval.md.")
    headline = report["headline"]
    mean = ", ".join(headline["metrics"]) or "nothing (no task has a metric)"
    missing = " — where a row leaves out one of them." if any(row["mean"] is None for row in report["rows"]) else "."
    text = [
        "# embed_jax evaluation",
        "",
        f"{len(report['tasks'])} task(s) run:",
        "",
        *tasks_lines(report),
        "",
        *provenance_lines(report),
        f"mean = {headline.get('definition', 'unweighted mean')}: {mean}{missing}",
        "",
        markdown_table(report),
        "",
        f"![scores per task metric, each model and head]({CHART_FILE})",
    ]
    if notes:
        text += [""] + notes
    return "\n".join(text) + "\n"


def chart_bars(report: dict[str, Any]) -> list[chart.Bar]:
    """The table's rows as the chart draws them: labelled as in the table, grouped by model (and stage)."""
    columns = table_columns(report)
    bars = []
    for row in report["rows"]:
        _, head = row_label(row, report)
        model = f"{row['model']}{stage_note(row)}"
        bars.append(chart.Bar(label=model + ("" if head == "—" else f" · {head}"),
                              values=[row["metrics"].get(key) for _, key in columns], model=model,
                              quantised=precision_of(row) != quantized.FLOAT))
    return bars


def write_chart(report: dict[str, Any], path: Path) -> Path:
    return chart.plot_results([title for title, _ in table_columns(report)], chart_bars(report), path)


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """results.json and results.md (returned), and results.png beside them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    check_output_folder(out_dir)
    json_path, markdown_path = out_dir / JSON_FILE, out_dir / MARKDOWN_FILE
    columns = [[title, key] for title, key in table_columns(report)]  # the model card titles its columns so
    json_path.write_text(json.dumps({"format": FORMAT, **report, "columns": columns}, indent=1, ensure_ascii=False)
                         + "\n", encoding="utf-8")
    markdown_path.write_text(markdown(report), encoding="utf-8")
    with cli.writing(out_dir / CHART_FILE):
        write_chart(report, out_dir / CHART_FILE)
    return json_path, markdown_path
