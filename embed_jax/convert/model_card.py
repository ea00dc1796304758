"""The README.md model card of an exported student: what it is, how it was made, how to load it and pick a head,
and (optionally) its evaluation from `python -m embed_jax.eval`: the table and the bar chart.

The evaluation JSON is read tolerantly: a list of rows, or an object whose "rows" is that list; each row a flat dict
such as {"model": ..., "head": ..., "lee/spearman": 0.51, ...}, or a row of embed_jax.eval's results.json, whose
"metrics" are spread into columns (model, head, dim, every metric, mean; a quantised row's head reads "256 · int8").
Columns are "model", "head", then every other key in the order first seen; numbers print with 4 decimals, missing
cells stay empty. The chart embed_jax.eval writes beside its JSON (results.png) is copied into the folder as
evaluation.png and shown above the table.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LEADING_COLUMNS = ("model", "head")
# The bar chart embed_jax/eval/report.py writes beside results.json (its CHART_FILE), and its name in an export.
EVAL_CHART_FILE, CARD_CHART_FILE = "results.png", "evaluation.png"
FLOAT_PRECISION = "float32"  # embed_jax.eval's unquantised rows


@dataclasses.dataclass(frozen=True)
class CardFacts:
    """Everything the card states, gathered by the exporter."""

    title: str
    family: str
    hf_class: str
    hidden_size: int
    num_layers: int | None
    num_parameters: int
    pooling: str
    heads: tuple[int, ...]
    default_head: int
    teacher_dim: int | None
    max_seq_length: int
    init_from: str
    source: Mapping[str, Any]
    stages: Sequence[Mapping[str, Any]]
    teachers: Sequence[Mapping[str, Any]]
    training_records: Sequence[Mapping[str, Any]]
    notices: Sequence[str] = ()
    eval_rows: Sequence[Mapping[str, Any]] = ()
    eval_chart: str | None = None  # the chart's file name in the exported folder


# ---------------------------------------------------------------------------------------------------- evaluation


def read_eval_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an evaluation JSON (see the module docstring), or a ValueError naming the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--eval_json={path}: no such file (write it with python -m embed_jax.eval)") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"--eval_json={path} line {error.lineno}: not valid JSON ({error.msg})") from error
    rows = data.get("rows") if isinstance(data, Mapping) else data
    if not isinstance(rows, list) or not all(isinstance(row, Mapping) for row in rows):
        raise ValueError(f"--eval_json={path}: expected a list of rows (objects such as {{\"model\": ..., \"head\": "
                         "..., \"metric\": value}}) or an object with such a list under \"rows\"")
    return [flat_row(row) if isinstance(row.get("metrics"), Mapping) else dict(row) for row in rows]


def flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of embed_jax.eval's results.json as table cells."""
    head = row.get("head")
    precision = row.get("precision", FLOAT_PRECISION)
    if precision != FLOAT_PRECISION:
        head = f"{head} · {precision}"
    return {"model": row.get("model"), "head": head, "dim": row.get("dim"), **row["metrics"], "mean": row.get("mean")}


def chart_beside(eval_json: str | Path) -> Path | None:
    """The bar chart embed_jax.eval wrote beside its JSON, if it is there."""
    path = Path(eval_json).with_name(EVAL_CHART_FILE)
    return path if path.is_file() else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table: model, head, then every other key in first-seen order."""
    if not rows:
        return ""
    columns = [key for key in LEADING_COLUMNS if any(key in row for row in rows)]
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- card


def _teachers_section(facts: CardFacts) -> list[str]:
    if not facts.teachers:
        return ["Teachers: not recorded (the training records' manifest was not found at export time)."]
    lines = ["| teacher | model | dim | prompt (teacher side only) |", "|---|---|---|---|"]
    lines += [f"| {_cell(t.get('name'))} | {_cell(t.get('path'))} | {_cell(t.get('dim'))} | "
              f"{_cell(repr(t['prompt']) if t.get('prompt') else '(none)')} |" for t in facts.teachers]
    return lines


def _stages_section(facts: CardFacts) -> list[str]:
    lines = ["| stage | steps | last logged loss |", "|---|---|---|"]
    for stage in facts.stages:
        loss = stage.get("last_loss")
        lines.append(f"| {stage['name']} | {_cell(stage.get('final_step'))} | "
                     f"{_cell(float(loss)) if loss is not None else ''} |")
    return lines


def _heads_section(facts: CardFacts) -> list[str]:
    lines = ["| head | folder | role |", "|---|---|---|"]
    for dim in facts.heads:
        role = "FC1 (teacher dimension)" if dim == facts.teacher_dim else "reduction head"
        default = " — **default** (modules.json)" if dim == facts.default_head else ""
        lines.append(f"| {dim} | `2_Dense_{dim}` | {role}{default} |")
    return lines


def _usage_section(facts: CardFacts) -> list[str]:
    other = next((dim for dim in facts.heads if dim != facts.default_head), facts.default_head)
    pool = {"mean": "mean over real tokens", "cls": "first token", "first": "first token",
            "last": "last real token"}[facts.pooling]
    pool_code = {
        "mean": "mask = batch['attention_mask'].unsqueeze(-1).float()\n"
                "    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)",
        "cls": "pooled = hidden[:, 0]",
        "first": "pooled = hidden[:, 0]",
        "last": "last = batch['attention_mask'].sum(1) - 1  # right padding\n"
                "    pooled = hidden[torch.arange(hidden.shape[0]), last]",
    }[facts.pooling]
    return [
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        "model = SentenceTransformer('PATH/TO/THIS/FOLDER')   # offline; no custom code",
        f"vectors = model.encode(['a sentence', 'another one'])  # ({facts.default_head}-d, unit length)",
        "```",
        "",
        "**Pick another head in sentence-transformers.** Every head is its own `Dense` module; replace the third "
        "module (index 2) with the folder of the head you want:",
        "",
        "```python",
        "from sentence_transformers.models import Dense",
        "",
        f"model[2] = Dense.load('PATH/TO/THIS/FOLDER/2_Dense_{other}')",
        f"vectors = model.encode(['a sentence'])  # now {other}-d",
        "```",
        "",
        f"or edit `modules.json` and change the path `2_Dense_{facts.default_head}` to `2_Dense_{other}` (the default "
        "for everyone loading this folder). Do not use `truncate_dim` to switch heads: the heads are separate "
        "projections, not prefixes of one vector.",
        "",
        f"**Plain transformers** (the backbone is a standard `{facts.hf_class}`; pooling is {pool}):",
        "",
        "```python",
        "import torch, torch.nn.functional as F",
        "from safetensors.torch import load_file",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        "folder = 'PATH/TO/THIS/FOLDER'",
        "tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()",
        f"head = load_file(f'{{folder}}/2_Dense_{facts.default_head}/model.safetensors')  # any 2_Dense_* folder",
        "with torch.no_grad():",
        f"    batch = tokenizer(['a sentence'], padding=True, truncation=True, max_length={facts.max_seq_length}, "
        "return_tensors='pt')",
        "    hidden = model(**batch).last_hidden_state",
        f"    {pool_code}",
        "    vectors = F.normalize(pooled @ head['linear.weight'].T + head['linear.bias'], dim=-1)",
        "```",
    ]


def render(facts: CardFacts) -> str:
    """The README.md text."""
    source = facts.source
    records = ", ".join(f"{r.get('num_records', '?')} texts (corpus fingerprint {str(r.get('corpus_fingerprint'))[:12]}"
                        f"…)" for r in facts.training_records) or "not recorded"
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, feature-extraction, sentence-similarity, embed_jax, distillation]",
        "---",
        "",
        f"# {facts.title}",
        "",
        f"A text-embedding student distilled with embed_jax (the Jasper and Stella method: "
        f"several teachers' vectors concatenated into one target, learned with cosine, similarity and relative "
        f"similarity losses in stages). Backbone: {facts.family} ({facts.num_layers or '?'} layers, hidden "
        f"{facts.hidden_size}, {facts.num_parameters / 1e6:.1f}M parameters with heads), initialised from "
        f"`{facts.init_from}`; {facts.pooling} pooling; {len(facts.heads)} output head(s): "
        f"{', '.join(str(d) for d in facts.heads)}. Vectors are L2-normalised; compare them with cosine similarity.",
        "",
        f"Exported from `{source.get('workdir')}` stage `{source.get('stage')}` step {source.get('step')}; "
        f"trained on {records}.",
        "",
        "The student reads the raw text: the teachers' prompts below were applied to the teachers' inputs only, so "
        "encode without a prompt.",
        "",
        "## Teachers",
        "",
        *_teachers_section(facts),
        "",
        "## Training stages",
        "",
        *_stages_section(facts),
        "",
        "## Heads",
        "",
        *_heads_section(facts),
        "",
        "Each head is a Linear layer with bias on the pooled vector, followed by L2 normalisation (the `Normalize` "
        "module). The folder computes in fp32.",
        "",
        "## How to load",
        "",
        *_usage_section(facts),
    ]
    if facts.eval_rows:
        lines += ["", "## Evaluation", "", "From `python -m embed_jax.eval` (one row per model and head):", ""]
        if facts.eval_chart:
            lines += [f"![evaluation: each model and head, per task metric]({facts.eval_chart})", ""]
        lines.append(markdown_table(facts.eval_rows))
    if facts.notices:
        lines += ["", "## Notes", ""] + [f"- {notice}" for notice in facts.notices]
    return "\n".join(lines) + "\n"
