r"""One distillation train step: embed_jax (jit, global-batch losses) vs the PyTorch way, same student, batch, length.

The PyTorch way is what users run today: Hugging Face `BertModel` + masked mean + `nn.Linear` heads + the public
Jasper code's loss formulation (cosine, MSE of Gram matrices, and the relative-similarity loss through the P×P
difference matrices of RAG-Retrieval's `model_distill.py`), `torch.optim.AdamW`, torch's CPU threads = JAX's.
Each framework runs in its own subprocess, so peak memory (RSS on CPU, allocator peak on GPU) is its own.

    python benchmarks/train_step.py                          # CPU: real all-MiniLM-L6-v2, stage 3 (all params)
    python benchmarks/train_step.py --stage heads            # stage 1 (FC1 only)
    python benchmarks/train_step.py --gpu --model bert-base --batch 128 --length 512 --dtype bfloat16 \
        --attention xla,cudnn                                # one JAX row per attention implementation

Prints a Markdown table: steps/s, ratio, peak memory, and (analytic) TFLOP/s and MFU when --peak-tflops is given.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MARGIN = 0.015
# Shapes for --model: the real MiniLM folder, or a random BERT of a standard size (no weights needed for speed).
MODELS = {
    "minilm": None,
    "bert-base": {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512},
    "bert-large": {"model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "intermediate_size": 4096, "vocab_size": 30522, "max_position_embeddings": 512},
}
TRAINABLE_LAYERS = {"all": None, "heads": 0, "heads+last_layers": 3}


def model_folder(name: str, scratch: Path) -> Path:
    """A real HF folder: MiniLM's, or a randomly initialised BERT of the named shape saved once."""
    if MODELS[name] is None:
        from embed_jax.assets import minilm_path

        return minilm_path()
    folder = scratch / name
    if not (folder / "config.json").is_file():
        from transformers import BertConfig, BertModel

        config = {key: value for key, value in MODELS[name].items() if key != "model_type"}
        BertModel(BertConfig(**config), add_pooling_layer=False).save_pretrained(folder)
    return folder


def make_batch(batch: int, length: int, teacher_dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 29000, size=(batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    # Varied real lengths inside the padded block, as a length bucket holds.
    for row, real in enumerate(rng.integers(length // 2, length + 1, size=batch)):
        mask[row, real:] = 0
    teacher = rng.normal(size=(batch, teacher_dim)).astype(np.float32)
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    return ids, mask, teacher


def peak_memory_mb(gpu_bytes: float | None = None) -> float:
    if gpu_bytes is not None:
        return gpu_bytes / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_jax(args) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from embed_jax import losses
    from embed_jax.models.student import Student
    from embed_jax.train import flops, optimizer, sharding, stages, step

    folder = model_folder(args.model, Path(args.scratch))
    student = Student.from_pretrained(folder, heads={"teacher_dim": args.teacher_dim, "reduction_dims": []},
                                      pooling_method="mean", dtype=jnp.dtype(args.dtype),
                                      text_options={"attention": args.jax_attention})
    paths = [path for path, _ in nnx.to_flat_state(nnx.state(student, nnx.Param))]
    select = stages.trainable_filter(args.stage, paths, last_layers=3)
    graphdef, trainable, frozen = stages.split_trainable(student, select)
    tx, _ = optimizer.make_optimizer({}, learning_rate=1e-5, total_steps=1000)
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    shard = lambda tree: sharding.state_sharding(tree, mesh)  # noqa: E731
    trainable_sh, frozen_sh = shard(trainable), shard(frozen)
    opt_sh = shard(jax.eval_shape(tx.init, trainable))
    batch_sh = sharding.batch_sharding(mesh)
    trainable, frozen = jax.device_put(trainable, trainable_sh), jax.device_put(frozen, frozen_sh)
    opt_state = jax.jit(tx.init, out_shardings=opt_sh)(trainable)
    train_step = step.make_train_step(
        graphdef=graphdef, optimizer=tx, loss_config=losses.LossConfig(main_head=f"dense_{args.teacher_dim}"),
        trainable_sharding=trainable_sh, frozen_sharding=frozen_sh, opt_state_sharding=opt_sh, batch_sharding=batch_sh)
    ids, mask, teacher = make_batch(args.batch, args.length, args.teacher_dim)
    batch = {name: jax.device_put(value, batch_sh)
             for name, value in (("input_ids", ids), ("attention_mask", mask), ("teacher", teacher))}
    start = time.perf_counter()
    trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / args.steps
    shape = flops.encoder_shape(student)
    layers = shape.num_layers if TRAINABLE_LAYERS[args.stage] is None else TRAINABLE_LAYERS[args.stage]
    step_flops = flops.train_step_flops(shape, args.batch, args.length, (args.teacher_dim,), trainable_layers=layers)
    gpu_peak = None
    if args.gpu:
        gpu_peak = jax.devices()[0].memory_stats().get("peak_bytes_in_use")
    return {"framework": f"embed_jax (JAX jit, {args.jax_attention} attention)", "step_s": seconds, "compile_s": compile_s,
            "loss": float(metrics["loss"]), "flops": step_flops, "peak_mb": peak_memory_mb(gpu_peak),
            "device": str(jax.devices()[0].device_kind)}


def run_torch(args) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import BertModel

    torch.set_num_threads(os.cpu_count())  # XLA's CPU client uses every core
    device = "cuda" if args.gpu else "cpu"
    folder = model_folder(args.model, Path(args.scratch))
    encoder = BertModel.from_pretrained(folder, add_pooling_layer=False).to(device).train()
    encoder.config.hidden_dropout_prob = 0.0
    head = torch.nn.Linear(encoder.config.hidden_size, args.teacher_dim).to(device)
    for module in encoder.modules():  # embed_jax's student has no dropout: compare like with like
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    num_layers = encoder.config.num_hidden_layers
    trainable_layers = TRAINABLE_LAYERS[args.stage]
    for name, parameter in encoder.named_parameters():
        if trainable_layers is None:
            parameter.requires_grad_(True)
        else:
            layer = int(name.split(".")[2]) if name.startswith("encoder.layer.") else -1
            parameter.requires_grad_(layer >= num_layers - trainable_layers)
    params = [p for p in list(encoder.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    ids, mask, teacher = make_batch(args.batch, args.length, args.teacher_dim)
    ids = torch.from_numpy(ids).long().to(device)
    mask = torch.from_numpy(mask).long().to(device)
    teacher = torch.from_numpy(teacher).to(device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def score_diff(embedding):  # RAG-Retrieval model_distill.py, get_score_diff
        scores = torch.matmul(embedding, embedding.T)
        scores = scores[torch.triu(torch.ones_like(scores), diagonal=1).bool()]
        diff = scores.reshape((1, -1)) - scores.reshape((-1, 1))
        return diff[torch.triu(torch.ones_like(diff), diagonal=1).bool()]

    def one_step():
        with autocast:
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1)
            student = F.normalize(head(pooled).float(), dim=-1)
        cosine = (1 - (student * teacher).sum(-1)).mean()
        similarity = F.mse_loss(student @ student.T, teacher @ teacher.T)
        with torch.no_grad():
            label = torch.where(score_diff(teacher) < 0, 1, -1)
        relative = F.relu(score_diff(student) * label + MARGIN).mean()
        loss = 10 * cosine + 200 * similarity + 20 * relative
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss

    def synchronize():
        if args.gpu:
            torch.cuda.synchronize()

    start = time.perf_counter()
    loss = one_step()
    synchronize()
    first_s = time.perf_counter() - start
    for _ in range(args.warmup):
        one_step()
    synchronize()
    if args.gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = one_step()
    synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    gpu_peak = torch.cuda.max_memory_allocated() if args.gpu else None
    return {"framework": "PyTorch (HF BertModel + public Jasper losses)", "step_s": seconds, "compile_s": first_s,
            "loss": float(loss), "peak_mb": peak_memory_mb(gpu_peak),
            "device": torch.cuda.get_device_name() if args.gpu else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="minilm")
    parser.add_argument("--stage", choices=sorted(TRAINABLE_LAYERS), default="all")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--teacher-dim", type=int, default=1152)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak, for MFU")
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--attention", default="xla", help="JAX attention implementation(s), comma-separated: one "
                        "row each (embed_jax/models/attention.py; 'cudnn' needs a GPU and bfloat16)")
    parser.add_argument("--jax-attention", default="xla", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default="/tmp/embed_jax_bench")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps((run_jax if args.worker == "jax" else run_torch)(args)))
        return
    rows = []
    workers = [(framework, implementation) for framework in args.frameworks.split(",")
               for implementation in (args.attention.split(",") if framework == "jax" else ["-"])]
    for framework, implementation in workers:
        command = [sys.executable, __file__, *sys.argv[1:], f"--worker={framework}", f"--jax-attention={implementation}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["(no output)"]
            error = next((line for line in reversed(lines) if "Error" in line), lines[-1])
            rows.append({"framework": f"{framework} ({implementation} attention)", "error": error[:200]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nTrain step, {args.model}, stage '{args.stage}', batch {args.batch} × length {args.length}, "
          f"teacher dim {args.teacher_dim}, {args.dtype}, {rows[0].get('device', '?')} ({os.cpu_count()} CPU threads)\n")
    print("| framework | step (s) | steps/s | vs PyTorch | first step / compile (s) | peak memory (MB) | TFLOP/s | MFU "
          "| loss after the timed steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    torch_row = next((row for row in rows if row.get("framework", "").startswith("PyTorch")), None)
    flops_per_step = next((row["flops"] for row in rows if "flops" in row), None)
    for row in rows:
        if "error" in row:
            print(f"| {row['framework']} | failed: {row['error']} | | | | | | | |")
            continue
        ratio = torch_row["step_s"] / row["step_s"] if torch_row and "step_s" in torch_row else float("nan")
        tflops = flops_per_step / row["step_s"] / 1e12 if flops_per_step else float("nan")
        mfu = f"{tflops / args.peak_tflops:.1%}" if args.peak_tflops else "–"
        print(f"| {row['framework']} | {row['step_s']:.3f} | {1 / row['step_s']:.2f} | {ratio:.2f}× | "
              f"{row['compile_s']:.1f} | {row['peak_mb']:.0f} | {tflops:.2f} | {mfu} | {row['loss']:.5f} |")
    if flops_per_step:
        print(f"\nAnalytic FLOPs per step (embed_jax/train/flops.py): {flops_per_step / 1e9:.1f} GFLOP")


if __name__ == "__main__":
    main()
