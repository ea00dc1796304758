"""What FC1 alone does to retrieval, from teacher records only (no encoder pass): the FC1 levers of docs/training.md,
"Keeping retrieval", scored on the WordNet validation split's texts that the records hold.

    .venv/bin/python scripts/fc1_probe.py --records=runs/results/records150k --eval_records=runs/wnval/records \
        --out=runs/fc1_probe [--seeds=0,1,2]

The records hold, for every text, the start's own unit vector (its teacher block: the student starts as that teacher)
and the target. So a frozen-encoder FC1 (stage 1) can be fitted and trained on them directly: FC1 maps the start's
unit vector to the target (the real stage 1 maps the start's *mean-pooled* vector, which differs from it by a length:
this probe leaves that length out). Rows:

- the start's own vectors, and the target (at `--teacher_weights`);
- FC1 = the least-squares affine map onto the target (where the cosine loss leads a linear head), and FC1 =
  `start_anchor.fc1_from_start` (identity onto the start's block, least squares on the rest: `fc1_init="start"`);
- FC1 trained for `--steps` batches of `--batch` with the paper's three losses (`losses.distillation_loss`, AdamW as
  `optimizer.make_optimizer`), from a random head or from `fc1_from_start`, and with the listwise ranking term
  (`--ranking`: weight@temperature pairs) — one row per seed.

Scored on `--eval_records`: records of `wordnet_validation` texts (training-side synsets, never the hold-out), ids as
the built-in corpus writes them (`wordnet:<synset>:example:<k>`, `wordnet:<synset>:definition`): each example whose
synset's definition is there too is a query against every definition there. Export them with the teachers of
`--records` from a JSON-lines file of {"id", "text"} (`--config.corpus.kind=jsonl --config.corpus.id_field=id`);
docs/training.md ("Keeping retrieval") made a seeded sample of the split that way. FC1 is fitted and trained on every
record of `--records`. Either folder holding a text of a hold-out synset is refused. With `--lee_records` (the 50 Lee
documents exported the same way, ids `lee:NN`), every row also gets the evaluation's two Lee scores: those documents
are the hold-out's, so they are reported, never used to choose.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from embed_jax import losses
from embed_jax.data import corpora, records, teacher_weights
from embed_jax.eval import lee, metrics, tasks
from embed_jax.train import optimizer as optimizers
from embed_jax.train.stages import start_anchor

RECORDS = flags.DEFINE_string("records", None, "Training records that FC1 is fitted on (their finished shards: an "
                              "export may still be running).")
EVAL_RECORDS = flags.DEFINE_string("eval_records", None, "Records of wordnet_validation examples and definitions to "
                                   "score on.")
OUT = flags.DEFINE_string("out", None, "Folder for fc1_probe.md and fc1_probe.json.")
WEIGHTS = flags.DEFINE_string("teacher_weights", "minilm=0.15,mpnet=0.85", "The target's weights, as "
                              "data.teacher_weights.")
START = flags.DEFINE_string("start_teacher", "minilm", "The records' teacher that is the student's start.")
STEPS = flags.DEFINE_integer("steps", 3000, "Training steps of each trained FC1 (configs/results.py's study: 3,000).")
BATCH = flags.DEFINE_integer("batch", 32, "Global batch of each step (configs/results.py: 32).")
LR = flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (the cached stage 1's: 1e-3).")
SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds of the trained rows (init and batch order).")
RANKING = flags.DEFINE_string("ranking", "20@0.05", "Comma-separated WEIGHT@TEMPERATURE of the ranking term rows.")
LEE_RECORDS = flags.DEFINE_string("lee_records", "", "Optional: records of the 50 Lee documents (the hold-out's Lee "
                                   "tasks, only scored, never chosen on): adds Lee Spearman and nDCG@10 to every row.")
flags.mark_flags_as_required(["records", "eval_records", "out"])


# ---------------------------------------------------------------------------------------------------- the data


def read_finished(folder: Path) -> tuple[records.Manifest, list[str], np.ndarray]:
    """(manifest, ids, teacher vectors float32) of every finished shard of a records folder, in shard order."""
    from array_record.python import array_record_module

    manifest, shards = records.finished_shards(folder)
    ids, vectors = [], []
    for index in sorted(shards):
        reader = array_record_module.ArrayRecordReader(str(folder / f"{records.shard_stem(index)}.array_record"))
        for data in reader.read_all():
            row = records.decode_record(data)
            ids.append(row["id"])
            vectors.append(np.asarray(row["teacher"], np.float32))
        reader.close()
    if not ids:
        raise SystemExit(f"--records={folder}: no finished shard yet")
    return manifest, ids, np.stack(vectors)


def weighted_target(vectors: np.ndarray, manifest: records.Manifest, weights: str) -> np.ndarray:
    parsed = teacher_weights.weights_for_teachers(weights, manifest.teacher_names, records_dir="--records")
    scales = teacher_weights.block_scales([info.dim for info in manifest.teachers], parsed)
    return vectors if scales is None else vectors * scales


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def refuse_holdout(ids: list[str], flag: str) -> None:
    held_out = [record for record in ids if record.startswith("wordnet:") and corpora.is_held_out_synset(
        record.split(":")[1])]
    if held_out:
        raise SystemExit(f"{flag} holds a text of a hold-out WordNet synset ({held_out[0]}): knobs are chosen on "
                         "training-side synsets only")


def validation_split(ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query rows, corpus rows, each query's relevant corpus position): examples of wordnet_validation synsets whose
    definition is held too, against every wordnet_validation definition held."""
    keys = {synset.key for synset in corpora.wordnet_validation()}
    definitions = {record.split(":")[1]: row for row, record in enumerate(ids)
                   if record.startswith("wordnet:") and record.endswith(":definition") and record.split(":")[1] in keys}
    corpus_rows = np.array(sorted(definitions.values()), np.int64)
    position = {row: index for index, row in enumerate(corpus_rows)}
    queries, relevant = [], []
    for row, record in enumerate(ids):
        parts = record.split(":")
        if parts[0] == "wordnet" and len(parts) > 2 and parts[2] == "example" and parts[1] in definitions:
            queries.append(row)
            relevant.append(position[definitions[parts[1]]])
    return np.array(queries, np.int64), corpus_rows, np.array(relevant, np.int64)


def retrieval(vectors: np.ndarray, queries, corpus, relevant) -> dict[str, float]:
    vectors = unit(np.asarray(vectors, np.float64))
    ranks = metrics.rank_of_relevant(vectors[queries] @ vectors[corpus].T, relevant)
    return {"recall@1": metrics.recall_at_k(ranks, 1), "mrr@10": metrics.mrr_at_k(ranks, 10)}


def lee_scores(vectors: np.ndarray, texts: list[str]) -> dict[str, float]:
    """The evaluation's own Lee tasks (Spearman of cosines with the human scores, graded nDCG@10) on these vectors."""
    scored = tasks.TextVectors(index={text: row for row, text in enumerate(texts)},
                               matrix=unit(np.asarray(vectors, np.float64)).astype(np.float32))
    return {"lee_spearman": lee.LeeSimilarity().score(scored).metrics["spearman"],
            "lee_ndcg@10": lee.LeeRetrieval().score(scored).metrics[f"ndcg@{lee.NDCG_K}"]}


def read_texts(folder: Path) -> list[str]:
    from array_record.python import array_record_module

    _, shards = records.finished_shards(folder)
    texts = []
    for index in sorted(shards):
        reader = array_record_module.ArrayRecordReader(str(folder / f"{records.shard_stem(index)}.array_record"))
        texts += [records.decode_record(data)["text"] for data in reader.read_all()]
        reader.close()
    return texts


# ---------------------------------------------------------------------------------------------------- FC1


def least_squares(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
    solution, *_ = np.linalg.lstsq(design, t.astype(np.float64), rcond=None)
    return solution[:-1].astype(np.float32), solution[-1].astype(np.float32)


def train_fc1(x: np.ndarray, t: np.ndarray, init: tuple[np.ndarray, np.ndarray] | None, loss_config, *, seed: int,
              steps: int, batch: int, learning_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """FC1 trained as a cached stage 1 trains it: random batches of (x, t) rows, the distillation loss, AdamW."""
    rng = np.random.default_rng(seed)
    if init is None:  # nnx.Linear's default: lecun-normal kernel, zero bias
        params = {"kernel": (rng.standard_normal((x.shape[1], t.shape[1])) / np.sqrt(x.shape[1])).astype(np.float32),
                  "bias": np.zeros(t.shape[1], np.float32)}
    else:
        params = {"kernel": init[0], "bias": init[1]}
    optimizer, _ = optimizers.make_optimizer(None, learning_rate=learning_rate, total_steps=steps)
    state = optimizer.init(params)
    xs, ts = jnp.asarray(x), jnp.asarray(t)

    @jax.jit
    def step(params, state, rows):
        def loss(params):
            return losses.distillation_loss({"fc1": xs[rows] @ params["kernel"] + params["bias"]}, ts[rows],
                                            loss_config)[0]
        grads = jax.grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    order = np.concatenate([rng.permutation(len(x)) for _ in range(steps * batch // len(x) + 1)])
    for index in range(steps):
        params, state = step(params, state, jnp.asarray(order[index * batch:(index + 1) * batch]))
    return np.asarray(params["kernel"]), np.asarray(params["bias"])


def main(argv) -> int:
    del argv
    folder = Path(RECORDS.value)
    manifest, train_ids, train_vectors = read_finished(folder)
    eval_manifest, ids, vectors = read_finished(Path(EVAL_RECORDS.value))
    refuse_holdout(train_ids, "--records")
    refuse_holdout(ids, "--eval_records")
    if eval_manifest.teacher_names != manifest.teacher_names:
        raise SystemExit(f"--eval_records has the teachers {eval_manifest.teacher_names}, --records "
                         f"{manifest.teacher_names}: export both with the same teachers")
    block = manifest.teacher_slices[START.value]
    fit_start = unit(train_vectors[:, block])
    fit_target = unit(weighted_target(train_vectors, manifest, WEIGHTS.value))
    target = unit(weighted_target(vectors, manifest, WEIGHTS.value))
    start = unit(vectors[:, block])
    queries, corpus, relevant = validation_split(ids)
    print(f"wordnet_validation sample: {len(queries):,} examples against {len(corpus):,} definitions; FC1 fitted on "
          f"{len(train_ids):,} records", flush=True)
    rows = []
    lee_start = lee_target = lee_texts = None
    if LEE_RECORDS.value:
        lee_manifest, _, lee_vectors = read_finished(Path(LEE_RECORDS.value))
        lee_texts = read_texts(Path(LEE_RECORDS.value))
        lee_start = unit(lee_vectors[:, block])
        lee_target = unit(weighted_target(lee_vectors, lee_manifest, WEIGHTS.value))

    def add(name, head, seed=None):
        """head: start vectors → the row's vectors; None for the target."""
        vectors = target if head is None else head(start)
        row = {"name": name, "seed": seed, **retrieval(vectors, queries, corpus, relevant),
               "fit": float(np.median(np.sum(unit(vectors[queries]) * target[queries], axis=1)))
               if vectors.shape[1] == target.shape[1] else None}
        if lee_texts is not None:
            row.update(lee_scores(lee_target if head is None else head(lee_start), lee_texts))
        rows.append(row)
        print(json.dumps(row), flush=True)

    def linear(kernel, bias):
        return lambda x: x @ kernel + bias

    add(f"the start ({START.value})", lambda x: x)
    add(f"the target ({WEIGHTS.value})", None)
    add("FC1 = least squares", linear(*least_squares(fit_start, fit_target)))
    anchored = start_anchor.fc1_from_start(fit_start, fit_target, block)
    add("FC1 = fc1_from_start (step 0)", linear(*anchored))
    paper = losses.LossConfig(main_head="fc1")
    variants = [("random FC1, paper's losses", None, paper), ("FC1 from the start, paper's losses", anchored, paper)]
    for pair in filter(None, RANKING.value.split(",")):
        weight, temperature = (float(value) for value in pair.split("@"))
        ranked = losses.LossConfig(main_head="fc1", ranking_weight=weight, ranking_temperature=temperature)
        variants += [(f"random FC1, + ranking {weight:g}@{temperature:g}", None, ranked),
                     (f"FC1 from the start, + ranking {weight:g}@{temperature:g}", anchored, ranked)]
    for seed in (int(value) for value in SEEDS.value.split(",")):
        for name, init, loss_config in variants:
            kernel, bias = train_fc1(fit_start, fit_target, init, loss_config, seed=seed, steps=STEPS.value,
                                     batch=BATCH.value, learning_rate=LR.value)
            add(f"{name}, {STEPS.value} steps", linear(kernel, bias), seed)
    out = Path(OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{len(queries):,} wordnet_validation examples against {len(corpus):,} definitions "
             f"({EVAL_RECORDS.value}); FC1 fitted on {len(train_ids):,} records of {folder}; target {WEIGHTS.value}\n",
             "| FC1 | seed | fit | WN R@1 | WN MRR@10 | Lee ρ | Lee nDCG@10 |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        fit_text = "—" if row["fit"] is None else f"{row['fit']:.3f}"
        lee_text = " | ".join(f"{row[key]:.3f}" if key in row else "—" for key in ("lee_spearman", "lee_ndcg@10"))
        lines.append(f"| {row['name']} | {'' if row['seed'] is None else row['seed']} | {fit_text} | "
                     f"{row['recall@1']:.4f} | {row['mrr@10']:.4f} | {lee_text} |")
    (out / "fc1_probe.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "fc1_probe.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
