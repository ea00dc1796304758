"""The evaluation's output files: results.json (everything) and results.md (the table), in the --out folder.

The folder may already hold an earlier evaluation's output (and its vector cache); those two files are replaced.
Any other results.json / results.md there (not written by embed_jax.eval) is left alone and the run refuses.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embed_jax.eval import overlap

FORMAT = "embed_jax.eval/1"
JSON_FILE, MARKDOWN_FILE = "results.json", "results.md"

# (column title, metric key) of the Markdown table; the JSON holds every metric.
COLUMNS = (
    ("Lee Spearman", "lee_similarity/spearman"),
    ("Lee Pearson", "lee_similarity/pearson"),
    ("Lee nDCG@10", "lee_retrieval/ndcg@10"),
    ("WN R@1", "wordnet_retrieval/recall@1"),
    ("WN R@10", "wordnet_retrieval/recall@10"),
    ("WN MRR@10", "wordnet_retrieval/mrr@10"),
)
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
    if markdown_path.is_file() and not ours:
        raise OutputFolderError(f"{markdown_path} exists without an embed_jax.eval {JSON_FILE} beside it; nothing "
                                f"was changed. Choose another --out folder or move that file.")


def format_value(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def stage_note(row: dict[str, Any]) -> str:
    """' (stage3)' when a workdir spec was resolved to its last stage."""
    stage_dir = row["source"].get("stage_dir")
    if not stage_dir or Path(row["model"]).name == Path(stage_dir).name:
        return ""
    return f" ({Path(stage_dir).name})"


def markdown_table(report: dict[str, Any]) -> str:
    columns = [(title, key) for title, key in COLUMNS if any(key in row["metrics"] for row in report["rows"])]
    header = ["model", "head", "dim"] + [title for title, _ in columns] + ["mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in report["rows"]:
        several = sum(other["model"] == row["model"] for other in report["rows"]) > 1
        head = "—" if row["head"] == "default" else row["head"] + (" (default)" if row["default_head"] and several
                                                                   else "")
        cells = [f"`{row['model']}`{stage_note(row)}{HOLDOUT_MARKS[row['holdout']['status']]}", head, str(row["dim"])]
        cells += [format_value(row["metrics"].get(key)) for _, key in columns]
        cells.append(format_value(row["mean"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counts_line(report: dict[str, Any]) -> str:
    tasks = report["tasks"]
    parts = []
    if "lee_similarity" in tasks:
        counts = tasks["lee_similarity"]["counts"]
        parts.append(f"Lee: {counts.get('documents')} documents, {counts.get('pairs')} scored pairs")
    if "wordnet_retrieval" in tasks:
        counts = tasks["wordnet_retrieval"]["counts"]
        parts.append(f"WordNet: {counts.get('queries'):,} example queries vs {counts.get('corpus'):,} held-out "
                     f"definitions")
    return "; ".join(parts)


def markdown(report: dict[str, Any]) -> str:
    statuses = {row["holdout"]["status"] for row in report["rows"]}
    notes = []
    if overlap.UNCHECKED in statuses:
        notes.append("† the training records could not be read, so the hold-out overlap is unchecked "
                     "(results.json: holdout.note).")
    if overlap.OVERLAP_ALLOWED in statuses:
        notes.append("‡ trained on records that overlap the hold-out (--allow_overlap): not a fair score.")
    mean = ", ".join(report["headline"]["metrics"])
    text = [
        "# embed_jax evaluation",
        "",
        f"Hold-out that training never sees (docs/eval.md). {counts_line(report)}. mean = unweighted mean of {mean}.",
        "",
        markdown_table(report),
    ]
    if notes:
        text += [""] + notes
    return "\n".join(text) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    check_output_folder(out_dir)
    json_path, markdown_path = out_dir / JSON_FILE, out_dir / MARKDOWN_FILE
    json_path.write_text(json.dumps({"format": FORMAT, **report}, indent=1, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    markdown_path.write_text(markdown(report), encoding="utf-8")
    return json_path, markdown_path
