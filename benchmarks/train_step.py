r"""One distillation train step: embed_jax (jit, global-batch losses) vs the PyTorch way, same student, batch, length.

The PyTorch way is what users run today: Hugging Face `BertModel` + masked mean + `nn.Linear` heads + the public
Jasper code's loss formulation (cosine, MSE of Gram matrices, and the relative-similarity loss through the P×P
difference matrices of RAG-Retrieval's `model_distill.py`), `torch.optim.AdamW`, torch's CPU threads = JAX's.
Each framework runs in its own long-lived child process (peak memory, RSS on CPU or allocator peak on GPU, is its
own), set up once (loading, compiling, `--warmup` steps), then the sides take turns, A B A B …, `--rounds` rounds of
`--steps` steps each (benchmarks/harness.py): each side reports the median seconds per step with its min–max, and
the ratio is the median of the rounds' ratios, each taken between neighbouring rounds. The load average is printed
at the start and the end, with a warning when the machine is busy. Each side also reports the CPU time its process
used per step: with `--threads 1` it is the work itself, which a busy machine barely changes (with more threads
it also counts threads spinning while they wait for each other, as PyTorch's OpenMP threads do on busy cores).

    python benchmarks/train_step.py                          # CPU: real all-MiniLM-L6-v2, stage 3 (all params)
    python benchmarks/train_step.py --stage heads            # stage 1 (FC1 only)
    python benchmarks/train_step.py --gpu --model bert-base --batch 128 --length 512 --dtype bfloat16 \
        --attention xla,cudnn                                # one JAX row per attention implementation

Prints a Markdown table: steps/s, ratio, peak memory, and (analytic) TFLOP/s and MFU when --peak-tflops is given.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import harness  # noqa: E402

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


class BadInput(ValueError):
    """A flag that cannot be run as given; main prints it as one line."""


def gpu_count() -> int:
    """CUDA GPUs on this machine, as `nvidia-smi -L` lists them (0 when it is missing), without starting JAX."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


def cpu_device_count() -> int:
    """JAX's CPU devices: 1, or what XLA_FLAGS' --xla_force_host_platform_device_count asks for."""
    found = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return int(found.group(1)) if found else 1


def check_args(args, *, gpus: int | None = None) -> None:
    """Refuses, with what to do, what the workers could only fail on after loading a model."""
    if args.model not in MODELS:
        raise BadInput(f"--model {args.model!r} is not known; choose one of {', '.join(sorted(MODELS))}")
    if args.stage not in TRAINABLE_LAYERS:
        raise BadInput(f"--stage {args.stage!r} is not known; choose one of {', '.join(sorted(TRAINABLE_LAYERS))}")
    unknown = sorted(set(args.frameworks.split(",")) - {"jax", "torch"})
    if unknown:
        raise BadInput(f"--frameworks has {unknown}; use jax, torch or jax,torch")
    for flag in ("batch", "length", "steps", "rounds", "teacher_dim", "threads"):
        if getattr(args, flag) < 1:
            raise BadInput(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise BadInput(f"--warmup must be 0 or more, got {args.warmup}")
    if args.gpu:
        gpus = gpu_count() if gpus is None else gpus
        if gpus == 0:
            raise BadInput("--gpu was given but this machine has no CUDA GPU (nvidia-smi lists none); "
                           "drop --gpu to run on the CPU")
        devices = gpus
    else:
        devices = cpu_device_count()
    if args.batch % devices:
        raise BadInput(f"--batch {args.batch} does not divide by the {devices} device(s) the batch is sharded over; "
                       f"use a multiple of {devices}")


def build_jax(args) -> dict:
    """The embed_jax side's pieces: the student split into trainable and frozen, the optimizer, the compiled step
    and one batch on the devices (benchmarks/profile_train_step.py times them apart)."""
    import jax
    import jax.numpy as jnp

    from embed_jax import losses
    from embed_jax.models.student import Student
    from embed_jax.train import sharding
    from embed_jax.train.config import StageConfig
    from embed_jax.train.stages.batch import make_batch_step

    if args.gpu and jax.default_backend() != "gpu":
        raise SystemExit(f"error: --gpu was given but JAX's backend is {jax.default_backend()!r}; drop --gpu")
    if args.batch % jax.device_count():
        raise SystemExit(f"error: --batch {args.batch} does not divide by JAX's {jax.device_count()} devices")
    folder = model_folder(args.model, Path(args.scratch))
    student = Student.from_pretrained(folder, heads={"teacher_dim": args.teacher_dim, "reduction_dims": []},
                                      pooling_method="mean", dtype=jnp.dtype(args.dtype),
                                      text_options={"attention": args.jax_attention})
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    loss_config = losses.LossConfig(main_head=f"dense_{args.teacher_dim}")
    # The training loop's own split, optimizer, shardings and jitted step (embed_jax/train/stages/batch.py).
    stepper = make_batch_step(student, StageConfig(args.stage, 1e-5, 1000, last_layers=3), {}, loss_config, mesh,
                              target="records")
    state = stepper.state
    ids, mask, teacher = make_batch(args.batch, args.length, args.teacher_dim)
    batch = {name: jax.device_put(value, stepper.batch_sharding)
             for name, value in (("input_ids", ids), ("attention_mask", mask), ("teacher", teacher))}
    return {"student": student, "graphdef": state.graphdef, "trainable": state.trainable, "frozen": state.frozen,
            "optimizer": state.optimizer, "opt_state": state.opt_state, "loss_config": loss_config,
            "train_step": stepper.train_step, "batch": batch}


def jax_side(args):
    """(setup, run_round) of the embed_jax side: compile and warm up now, `--steps` timed steps per round."""
    import jax

    from embed_jax.train import flops

    parts = build_jax(args)
    train_step, frozen, batch = parts["train_step"], parts["frozen"], parts["batch"]
    state = {"trainable": parts["trainable"], "opt_state": parts["opt_state"]}

    def run_steps(count: int) -> dict:
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            state["trainable"], state["opt_state"], metrics = train_step(state["trainable"], frozen,
                                                                         state["opt_state"], batch)
        jax.block_until_ready(metrics)
        return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - start_cpu,
                "loss": float(metrics["loss"])}

    compile_s = run_steps(1)["seconds"]
    if args.warmup:
        run_steps(args.warmup)
    shape = flops.encoder_shape(parts["student"])
    layers = shape.num_layers if TRAINABLE_LAYERS[args.stage] is None else TRAINABLE_LAYERS[args.stage]
    step_flops = flops.train_step_flops(shape, args.batch, args.length, (args.teacher_dim,), trainable_layers=layers)
    setup = {"framework": f"embed_jax (JAX jit, {args.jax_attention} attention)", "compile_s": compile_s,
             "flops": step_flops, "device": str(jax.devices()[0].device_kind)}

    def run_round() -> dict:
        timed = run_steps(args.steps)
        gpu_peak = jax.devices()[0].memory_stats().get("peak_bytes_in_use") if args.gpu else None
        return {"step_s": timed["seconds"] / args.steps, "cpu_s": timed["cpu_seconds"] / args.steps,
                "loss": timed["loss"], "peak_mb": peak_memory_mb(gpu_peak)}

    return setup, run_round


def build_torch(args) -> dict:
    """The PyTorch side's pieces: encoder, head, optimizer, batch, and the loss of RAG-Retrieval's formulation."""
    import torch
    import torch.nn.functional as F
    from transformers import BertModel

    torch.set_num_threads(args.threads)  # = the cores the child may run on, which XLA's CPU client sizes its pool to
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

    def forward():
        with autocast:
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1)
            return F.normalize(head(pooled).float(), dim=-1)

    def loss_terms(student):
        cosine = (1 - (student * teacher).sum(-1)).mean()
        similarity = F.mse_loss(student @ student.T, teacher @ teacher.T)
        with torch.no_grad():
            label = torch.where(score_diff(teacher) < 0, 1, -1)
        relative = F.relu(score_diff(student) * label + MARGIN).mean()
        return {"cosine": cosine, "similarity": similarity, "relative_similarity": relative}

    def total_loss(terms):
        return 10 * terms["cosine"] + 200 * terms["similarity"] + 20 * terms["relative_similarity"]

    def update():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def one_step():
        loss = total_loss(loss_terms(forward()))
        loss.backward()
        update()
        return loss

    return {"forward": forward, "loss_terms": loss_terms, "total_loss": total_loss, "update": update,
            "one_step": one_step, "params": params, "device": device}


def torch_side(args):
    """(setup, run_round) of the PyTorch side: first step and warm-up now, `--steps` timed steps per round."""
    import torch

    parts = build_torch(args)
    one_step = parts["one_step"]

    def run_steps(count: int) -> dict:
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            loss = one_step()
        if args.gpu:
            torch.cuda.synchronize()
        return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - start_cpu,
                "loss": float(loss)}

    first_s = run_steps(1)["seconds"]
    if args.warmup:
        run_steps(args.warmup)
    if args.gpu:
        torch.cuda.reset_peak_memory_stats()
    setup = {"framework": "PyTorch (HF BertModel + public Jasper losses)", "compile_s": first_s,
             "device": torch.cuda.get_device_name() if args.gpu else "cpu"}

    def run_round() -> dict:
        timed = run_steps(args.steps)
        gpu_peak = torch.cuda.max_memory_allocated() if args.gpu else None
        return {"step_s": timed["seconds"] / args.steps, "cpu_s": timed["cpu_seconds"] / args.steps,
                "loss": timed["loss"], "peak_mb": peak_memory_mb(gpu_peak)}

    return setup, run_round


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help=f"one of {', '.join(sorted(MODELS))}")
    parser.add_argument("--stage", default="all", help=f"one of {', '.join(sorted(TRAINABLE_LAYERS))}")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--teacher-dim", type=int, default=1152)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side (A B A B ...)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first, before the rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU cores each side's child is pinned "
                        "to (torch threads = this; XLA sizes its pool from the schedulable cores)")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak, for MFU")
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--attention", default="xla", help="JAX attention implementation(s), comma-separated: one "
                        "row each (embed_jax/models/attention.py; 'cudnn' needs a GPU and bfloat16)")
    parser.add_argument("--jax-attention", default="xla", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default="/tmp/embed_jax_bench")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def start_sides(args) -> tuple[dict, list[dict]]:
    """One ChildSide per (framework, attention implementation); the ones that fail to start become error rows."""
    sides, failed = {}, []
    for framework in args.frameworks.split(","):
        for implementation in (args.attention.split(",") if framework == "jax" else ["-"]):
            label = f"{framework} ({implementation} attention)" if framework == "jax" else "torch"
            command = [sys.executable, __file__, *sys.argv[1:], f"--worker={framework}",
                       f"--jax-attention={implementation}"]
            try:
                sides[label] = harness.ChildSide(label, command)
            except harness.SideFailed as error:
                failed.append({"framework": label, "error": str(error)})
    return sides, failed


def print_table(args, sides: dict, results: dict, failed: list[dict]) -> None:
    device = next((side.setup["device"] for side in sides.values()), "?")
    print(f"\nTrain step, {args.model}, stage '{args.stage}', batch {args.batch} × length {args.length}, "
          f"teacher dim {args.teacher_dim}, {args.dtype}, {device} ({args.threads} CPU threads each), "
          f"{args.rounds} interleaved rounds × {args.steps} steps: median (min–max)\n")
    print("| framework | step (s) | steps/s | vs PyTorch (per round) | CPU s per step | vs PyTorch, CPU time "
          "| first step / compile (s) | peak memory (MB) | TFLOP/s | MFU | loss after the timed steps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    flops_per_step = next((side.setup["flops"] for side in sides.values() if "flops" in side.setup), None)
    torch_rounds = results.get("torch")
    for label, side in sides.items():
        rounds = results[label]
        step_s = harness.median_of(rounds, "step_s")
        cpu_s = harness.median_of(rounds, "cpu_s")
        ratio = cpu_ratio = "–"
        if torch_rounds:
            ratio = harness.format_spread(harness.summarise([b["step_s"] / a["step_s"]
                                                             for a, b in zip(rounds, torch_rounds)]), "×", digits=2)
            cpu_ratio = harness.format_spread(harness.summarise([b["cpu_s"] / a["cpu_s"]
                                                                 for a, b in zip(rounds, torch_rounds)]), "×", 2)
        tflops = flops_per_step / step_s["median"] / 1e12 if flops_per_step else float("nan")
        mfu = f"{tflops / args.peak_tflops:.1%}" if args.peak_tflops else "–"
        print(f"| {side.setup['framework']} | {harness.format_spread(step_s, digits=3)} | {1 / step_s['median']:.2f} "
              f"| {ratio} | {harness.format_spread(cpu_s, digits=3)} | {cpu_ratio} | {side.setup['compile_s']:.1f} | {max(r['peak_mb'] for r in rounds):.0f} | {tflops:.2f} "
              f"| {mfu} | {rounds[-1]['loss']:.5f} |")
    for row in failed:
        print(f"| {row['framework']} | failed: {row['error']} | | | | | | | | | |")
    if flops_per_step:
        print(f"\nAnalytic FLOPs per step (embed_jax/train/flops.py): {flops_per_step / 1e9:.1f} GFLOP")


def main() -> None:
    args = parse_args()
    if args.worker:
        protocol = harness.claim_stdout()
        os.sched_setaffinity(0, set(range(args.threads)))  # before JAX or torch size their thread pools
        setup, run_round = (jax_side if args.worker == "jax" else torch_side)(args)
        harness.serve_rounds(protocol, run_round, setup)
        return
    try:
        check_args(args)
    except BadInput as error:
        raise SystemExit(f"train_step.py: error: {error}") from None
    load_before = harness.print_load("start")
    sides, failed = start_sides(args)
    try:
        results = harness.compare(sides, rounds=args.rounds)
    except harness.SideFailed as error:
        raise SystemExit(f"train_step.py: {error}") from None
    finally:
        for side in sides.values():
            side.close()
    harness.print_load("end", since=load_before)
    print_table(args, sides, results, failed)


if __name__ == "__main__":
    main()
