"""The README.md model card of an exported student: what it is, how it was made, how to load it and pick a head,
and (optionally) its evaluation from `python -m embed_jax.eval`: the table and the bar chart.

The evaluation JSON is read tolerantly: a list of rows, or an object whose "rows" is that list; each row a flat dict
such as {"model": ..., "head": ..., "lee/spearman": 0.51, ...}, or a row of embed_jax.eval's results.json, whose
"metrics" are spread into columns (model, head, dim, every metric, mean; a quantised row's head reads "256 · int8").
Columns are "model", "head", then every other key in the order first seen; numbers print with 4 decimals, missing
cells stay empty; a results.json of embed_jax.eval names its columns ("columns": [[title, key], ...]) and the card
uses those titles. Models are named as a reader of the published card can find them: this export's own rows as
"this model", a bundled teacher by its Hub id, any other local path by its folder name only. The chart
embed_jax.eval writes beside its JSON (results.png) is copied into the folder as evaluation.png and shown above the
table.

The card opens with the Hub's YAML metadata (library_name, pipeline_tag, tags, base_model, license, language,
datasets, and a model-index of this model's own float32 rows), so the folder can be published as it is
(`huggingface_hub.ModelCard` parses and validates it: tests/convert/test_model_card.py).
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from embed_jax.assets import public_name

LEADING_COLUMNS = ("model", "head")
THIS_MODEL = "this model"  # the model cell of the exported student's own evaluation rows
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
    eval_columns: Sequence[tuple[str, str]] = ()  # (title, key) of the metric columns, from results.json
    base_model: str | None = None  # the start's Hub id, when it has one
    license: str | None = None  # the start's, from its own card
    language: Sequence[str] = ()
    datasets: Sequence[str] = ()  # the training corpora, as the records' manifests name them
    matryoshka_dims: Sequence[int] = ()  # FC1's prefixes trained as embeddings (loss.matryoshka_dims)
    truncate_dim: int | None = None  # config_sentence_transformers.json's, when the default is a prefix


# ---------------------------------------------------------------------------------------------------- evaluation


def read_eval_rows(path: str | Path, is_this_model: Callable[[Mapping[str, Any]], bool] | None = None
                   ) -> list[dict[str, Any]]:
    """Rows of an evaluation JSON (see the module docstring), or a ValueError naming the file and what is wrong. The
    rows `is_this_model` picks are named "this model"; every other model as `public_spec` shows it."""
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
    cells = []
    for row in rows:
        cell = flat_row(row) if isinstance(row.get("metrics"), Mapping) else dict(row)
        if "model" in cell:
            cell["model"] = THIS_MODEL if is_this_model and is_this_model(row) else public_spec(cell["model"])
        cells.append(cell)
    return cells


def flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of embed_jax.eval's results.json as table cells."""
    head = row.get("head")
    precision = row.get("precision", FLOAT_PRECISION)
    if precision != FLOAT_PRECISION:
        head = f"{head} · {precision}"
    return {"model": row.get("model"), "head": head, "dim": row.get("dim"), **row["metrics"], "mean": row.get("mean")}


def read_eval_columns(path: str | Path) -> list[tuple[str, str]]:
    """(title, metric key) of the columns embed_jax.eval's results.json names; [] for other evaluation JSON."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    columns = data.get("columns") if isinstance(data, Mapping) else None
    if not isinstance(columns, list):
        return []
    return [(str(title), str(key)) for title, key in columns]


ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:~|/)[^\s+|@,]*")


def public_spec(spec: Any) -> Any:
    """A model spec as a published card may show it: asset:NAME → its Hub id, an absolute or home path → its last
    part; anything else unchanged."""
    if not isinstance(spec, str):
        return spec
    spec = re.sub(r"asset:[\w.-]+", lambda match: public_name(match.group(0)), spec)
    return ABSOLUTE_PATH.sub(lambda match: public_name(match.group(0)), spec)


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


def markdown_table(rows: Sequence[Mapping[str, Any]], titles: Mapping[str, str] | None = None) -> str:
    """One Markdown table: model, head, then every other key in first-seen order, titled by `titles` where given."""
    if not rows:
        return ""
    titles = titles or {}
    columns = [key for key in LEADING_COLUMNS if any(key in row for row in rows)]
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["| " + " | ".join(titles.get(key, key) for key in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- metadata

# Hub metric types (the names the Hub's evaluation results use) of embed_jax.eval's metric names.
METRIC_TYPES = {"spearman": "spearman", "pearson": "pearson", "ndcg@10": "ndcg_at_10", "mrr@10": "mrr_at_10",
                "recall@1": "recall_at_1", "recall@10": "recall_at_10", "recall@100": "recall_at_100",
                "accuracy": "accuracy"}
SIMILARITY_METRICS = ("spearman", "pearson")


def model_index(facts: CardFacts) -> list[dict[str, Any]]:
    """The model-index of this model's float32 rows: one result per task, each head's metrics in it."""
    titles = dict((key, title) for title, key in facts.eval_columns)
    results: dict[str, dict[str, Any]] = {}
    for row in facts.eval_rows:
        if row.get("model") != THIS_MODEL or "·" in str(row.get("head")):
            continue
        for key, value in row.items():
            task, _, metric = str(key).rpartition("/")
            if not task or not isinstance(value, (int, float)) or metric not in METRIC_TYPES:
                continue
            result = results.setdefault(task, {
                "task": {"type": "sentence-similarity" if metric in SIMILARITY_METRICS else "retrieval"},
                "dataset": {"type": task.replace(":", "-").replace("/", "-"), "name": task},
                "metrics": []})
            head = row.get("head")
            name = titles.get(key, key) + ("" if head in (None, "", "—") else f" (head {head})")
            result["metrics"].append({"type": METRIC_TYPES[metric], "value": round(float(value), 4), "name": name})
    return [{"name": facts.title, "results": list(results.values())}] if results else []


def metadata(facts: CardFacts) -> dict[str, Any]:
    """The card's YAML front matter (the Hub's model card metadata)."""
    data: dict[str, Any] = {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                            "tags": ["sentence-transformers", "feature-extraction", "sentence-similarity",
                                     "embed_jax", "distillation"]}
    if facts.matryoshka_dims:
        data["tags"].append("matryoshka")
    for key, value in (("base_model", facts.base_model), ("license", facts.license),
                       ("language", list(facts.language)), ("datasets", list(facts.datasets)),
                       ("model-index", model_index(facts))):
        if value:
            data[key] = value
    return data


# ---------------------------------------------------------------------------------------------------- card


def _teachers_section(facts: CardFacts) -> list[str]:
    if not facts.teachers:
        return ["Teachers: not recorded (the training records' manifest was not found at export time)."]
    lines = ["| teacher | model | dim | prompt (teacher side only) |", "|---|---|---|---|"]
    lines += [f"| {_cell(t.get('name'))} | {_cell(public_name(t.get('path')))} | {_cell(t.get('dim'))} | "
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
        role = "FC1 (teacher dimension)" if dim == facts.teacher_dim else "reduction head (its own projection)"
        default = " — **default** (modules.json)" if dim == facts.default_head else ""
        lines.append(f"| {dim} | `2_Dense_{dim}` | {role}{default} |")
    for dim in facts.matryoshka_dims:
        default = " — **default** (`truncate_dim`)" if dim == facts.truncate_dim else ""
        lines.append(f"| {dim} | `2_Dense_{facts.teacher_dim}`, first {dim} dims | Matryoshka prefix of FC1{default} |")
    lines.append("")
    if facts.matryoshka_dims:
        lines.append(f"**Kind of heads: Matryoshka.** FC1's first {', '.join(map(str, facts.matryoshka_dims))} dims "
                     "were trained as embeddings of their own (similarity and relative-similarity losses on each "
                     "prefix, `loss.matryoshka_dims`), so `truncate_dim` gives a trained vector: "
                     f"`SentenceTransformer(folder, truncate_dim={facts.matryoshka_dims[0]})`.")
    else:
        lines.append("**Kind of heads: separate projections** (the paper's). Each dimension is its own `Dense` "
                     "head; the first dims of a wider head were not trained as an embedding. **Do not use "
                     "`truncate_dim`** (sentence-transformers allows it, and it silently gives those untrained "
                     "first dims): switch heads as shown below.")
    return lines


def _usage_section(facts: CardFacts) -> list[str]:
    other = next((dim for dim in facts.heads if dim != facts.default_head), facts.default_head)
    width = facts.truncate_dim or facts.default_head
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
        f"vectors = model.encode(['a sentence', 'another one'])  # ({width}-d, unit length)",
        "```",
        "",
        "**Pick another head in sentence-transformers.** Every head is its own `Dense` module; replace the third "
        "module (index 2) with the folder of the head you want:",
        "",
        "```python",
        "from sentence_transformers.sentence_transformer.modules import Dense  # before 6.0: sentence_transformers.models",
        "",
        f"model[2] = Dense.load('PATH/TO/THIS/FOLDER/2_Dense_{other}')",
        f"vectors = model.encode(['a sentence'])  # now {other}-d",
        "```",
        "",
        f"or edit `modules.json` and change the path `2_Dense_{facts.default_head}` to `2_Dense_{other}` (the default "
        "for everyone loading this folder)." + ("" if facts.matryoshka_dims else " Do not use `truncate_dim` to "
                                                "switch heads: the heads are separate projections, not prefixes of one "
                                                "vector."),
        "",
        "**This card describes the folder as exported.** `model.save(...)` after switching heads writes only the "
        "head in use (as `2_Dense`) and copies this card unchanged: in a folder saved so, its `modules.json` and "
        "`2_Dense/config.json` (`out_features`), not the tables here, say which head it has.",
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
        yaml.safe_dump(metadata(facts), sort_keys=False, allow_unicode=True, width=120).rstrip(),
        "---",
        "",
        f"# {facts.title}",
        "",
        f"A text-embedding student distilled with embed_jax (the Jasper and Stella method: "
        f"several teachers' vectors concatenated into one target, learned with cosine, similarity and relative "
        f"similarity losses in stages). Backbone: {facts.family} ({facts.num_layers or '?'} layers, hidden "
        f"{facts.hidden_size}, {facts.num_parameters / 1e6:.1f}M parameters with heads), initialised from "
        f"`{public_name(facts.init_from)}`; {facts.pooling} pooling; {len(facts.heads)} output head(s): "
        f"{', '.join(str(d) for d in facts.heads)}. Vectors are L2-normalised; compare them with cosine similarity.",
        "",
        f"Exported from the run `{source.get('workdir')}` (relative to this folder) stage `{source.get('stage')}` "
        f"step {source.get('step')}; "
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
        titles = {key: title for title, key in facts.eval_columns} | {"dim": "dim", "mean": "mean"}
        lines.append(markdown_table(facts.eval_rows, titles))
    if facts.notices:
        lines += ["", "## Notes", ""] + [f"- {notice}" for notice in facts.notices]
    return "\n".join(lines) + "\n"
