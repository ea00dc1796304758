r"""Where one train step's time goes, on each side of benchmarks/train_step.py: forward, backward, each loss term, the
optimizer update, as shares of the step.

    python benchmarks/profile_train_step.py --side jax --stage all --batch 32 --length 64
    python benchmarks/profile_train_step.py --side torch --stage heads+last_layers --batch 32 --length 64
    python benchmarks/profile_train_step.py --side jax --xla-ops 15 --hlo /tmp/step.hlo   # + XLA op timings
    python benchmarks/profile_train_step.py --side torch --torch-ops 20 --threads 1        # + torch.profiler's ops

The flags of benchmarks/train_step.py (--model, --stage, --batch, --length, --dtype, --threads) pass through;
--threads N pins the process to N cores (torch threads = N; XLA sizes its pool from the schedulable cores).

Each piece is compiled (JAX) or warmed up (PyTorch) once, then the pieces take turns, `--rounds` rounds of
`--repeats` calls each (benchmarks/harness.py), so a change in the machine's load hits every piece alike; the table
gives each piece's median with its min–max, and its share of the whole step. The pieces:

  step            the whole train step, as train_step.py times it
  forward         encoder → mean pool → heads (PyTorch: with autograd recording, as in training)
  loss: <term>    forward + backward of one loss term alone, from fixed head outputs to their gradient
  loss: all       the three terms together (distillation_loss), from fixed head outputs
  forward+backward  value and gradient of the whole loss with respect to the trainable parameters
  optimizer       global-norm clipping + AdamW on given gradients
  backward (encoder)  forward+backward − forward − loss: all    (derived)
  rest            step − forward+backward − optimizer           (derived: what fusing the pieces saves or costs)

--xla-ops N traces `--repeats` steps with jax.profiler and lists the N XLA ops (thunks) that take the most time, with
their share of the traced time; --hlo FILE writes the step's optimised HLO, with counts of the op kinds the
profile points at (dots and their precision, while loops, scatters, copies and transposes).
The load average is printed at the start and the end, with a warning when the machine is busy.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import train_step  # noqa: E402

TERMS = ("cosine", "similarity", "relative_similarity")


def timed(call, repeats: int) -> dict:
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return {"seconds": (time.perf_counter() - start) / repeats}


def jax_pieces(args) -> dict:
    """{piece: a call that runs it once and waits for it}, every piece compiled and run once."""
    import jax
    import optax
    from flax import nnx

    from embed_jax import losses
    from embed_jax.train import step

    parts = train_step.build_jax(args)
    graphdef, frozen, batch, tx = parts["graphdef"], parts["frozen"], parts["batch"], parts["optimizer"]
    loss_config = parts["loss_config"]
    state = {"trainable": parts["trainable"], "opt_state": parts["opt_state"]}

    def heads_of(trainable, frozen, batch):
        student = nnx.merge(graphdef, trainable, frozen)
        return step.student_heads(student(batch["input_ids"], batch["attention_mask"]))

    forward = jax.jit(heads_of)
    loss_fn = jax.jit(jax.value_and_grad(
        lambda trainable, frozen, batch: step.compute_loss(trainable, frozen, batch, graphdef=graphdef,
                                                           loss_config=loss_config)[0]))

    def update(grads, opt_state, trainable):
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state

    update = jax.jit(update, donate_argnums=(1, 2))
    heads = forward(state["trainable"], frozen, batch)
    teacher = batch["teacher"]
    main = loss_config.main_head
    weights = {"cosine": loss_config.cosine_weight, "similarity": loss_config.similarity_weight,
               "relative_similarity": loss_config.relative_similarity_weight}

    def one_term(term):  # the teacher is an argument, not a constant XLA would fold
        def value(head_vectors, teacher):
            vectors = losses.l2_normalize(head_vectors[main])
            return weights[term] * getattr(losses, f"{term}_loss")(vectors, losses.l2_normalize(teacher))
        return jax.jit(jax.value_and_grad(value))

    all_terms = jax.jit(jax.value_and_grad(lambda h, t: losses.distillation_loss(h, t, loss_config)[0]))
    _, grads = loss_fn(state["trainable"], frozen, batch)

    def run_step():
        state["trainable"], state["opt_state"], metrics = parts["train_step"](state["trainable"], frozen,
                                                                              state["opt_state"], batch)
        jax.block_until_ready(metrics)

    def run_update():
        state["trainable"], state["opt_state"] = update(grads, state["opt_state"], state["trainable"])
        jax.block_until_ready(state["trainable"])

    pieces = {"step": run_step,
              "forward": lambda: jax.block_until_ready(forward(state["trainable"], frozen, batch)),
              **{f"loss: {term}": (lambda f=one_term(term): jax.block_until_ready(f(heads, teacher))) for term in TERMS},
              "loss: all": lambda: jax.block_until_ready(all_terms(heads, teacher)),
              "forward+backward": lambda: jax.block_until_ready(loss_fn(state["trainable"], frozen, batch)),
              "optimizer": run_update}
    for call in pieces.values():
        call()
    pieces["_hlo"] = lambda: parts["train_step"].lower(state["trainable"], frozen, state["opt_state"],
                                                       batch).compile().as_text()
    return pieces


def torch_pieces(args) -> dict:
    import torch

    parts = train_step.build_torch(args)
    forward, loss_terms, update = parts["forward"], parts["loss_terms"], parts["update"]
    weights = {"cosine": 10.0, "similarity": 200.0, "relative_similarity": 20.0}
    with torch.no_grad():
        fixed_heads = forward()

    def one_term(term):
        student = fixed_heads.clone().requires_grad_(True)
        (weights[term] * loss_terms(student)[term]).backward()

    def all_terms():
        student = fixed_heads.clone().requires_grad_(True)
        parts["total_loss"](loss_terms(student)).backward()

    def forward_backward():
        parts["total_loss"](loss_terms(forward())).backward()
        for parameter in parts["params"]:
            parameter.grad = None

    def run_update():  # on the gradients of one real backward, kept
        for parameter, grad in zip(parts["params"], grads):
            parameter.grad = grad.clone()
        update()

    parts["total_loss"](loss_terms(forward())).backward()
    grads = [parameter.grad.detach().clone() for parameter in parts["params"]]
    pieces = {"step": parts["one_step"], "forward": forward,
              **{f"loss: {term}": (lambda term=term: one_term(term)) for term in TERMS},
              "loss: all": all_terms, "forward+backward": forward_backward, "optimizer": run_update}
    for call in pieces.values():
        call()
    return pieces


def hlo_counts(hlo: str) -> dict[str, int]:
    """How many of the op kinds the profile points at the optimised step holds."""
    return {
        "dot (any)": len(re.findall(r"= [^ ]+ dot\(", hlo)),
        "dot, HIGHEST precision": len(re.findall(r"dot\(.*operand_precision=\{highest", hlo)),
        "convolution": len(re.findall(r" convolution\(", hlo)),
        "custom-call": len(re.findall(r" custom-call\(", hlo)),
        "while loops": len(re.findall(r" while\(", hlo)),
        "scatter": len(re.findall(r" scatter\(", hlo)),
        "gather": len(re.findall(r" gather\(", hlo)),
        "copy": len(re.findall(r" copy\(", hlo)),
        "transpose": len(re.findall(r" transpose\(", hlo)),
        "fusion": len(re.findall(r" fusion\(", hlo)),
        "all-gather / all-reduce": len(re.findall(r" all-(?:gather|reduce)\(", hlo)),
    }


def hlo_instructions(hlo: str) -> dict[str, tuple[str, str]]:
    """{instruction name: (kind, phase)} from the optimised HLO text. Kind: what runs (YNNPACK matmul fusion,
    other fusion, dot, copy, …); phase from the op's JAX name: 'transpose(jvp' is the backward pass, 'jvp' the
    forward, anything else the optimizer update and metrics."""
    instructions = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.-]+) = \S+ ([\w-]+)\(.*$", hlo, flags=re.MULTILINE):
        name, opcode, line = match.group(1), match.group(2), match.group(0)
        kind = name.rsplit(".", 1)[0] if opcode == "fusion" else opcode
        kind = "matmul (ynn_fusion)" if kind.startswith("ynn_fusion") else kind
        op_name = re.search(r'op_name="([^"]*)"', line)
        op_name = op_name.group(1) if op_name else ""
        phase = "backward" if "transpose(jvp" in op_name else "forward" if "jvp(" in op_name else "optimizer+metrics"
        instructions[name] = (kind, phase)
    return instructions


def op_group(kind: str) -> str:
    """Matmuls, layout changes, gathers and scatters (the embedding lookups), and every other fusion."""
    if kind.startswith("matmul") or kind == "dot":
        return "matmul"
    if "copy" in kind or "transpose" in kind:
        return "copy / transpose (layouts)"
    if "scatter" in kind or "gather" in kind or kind.startswith("wrapped_broadcast"):
        return "gather / scatter / zero-fill"
    return "elementwise and reduce fusions"


def xla_op_times(run_step, repeats: int, hlo: str) -> dict[tuple[str, str], float]:
    """Seconds per step by (op kind, phase), summed over XLA's threads, from jax.profiler's trace of `repeats` steps.
    Only events named after the step's HLO instructions count (no Python or runtime frames); a while loop counts by
    the ops inside it."""
    import jax

    instructions = hlo_instructions(hlo)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for _ in range(repeats):
                run_step()
        trace = next(Path(folder).rglob("*.xplane.pb"))
        profile = jax.profiler.ProfileData.from_file(str(trace))
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                found = instructions.get(event.name)
                if found and found[0] not in ("while", "call", "conditional"):
                    totals[found] += event.duration_ns / 1e9 / repeats
    return dict(totals)


def shares_table(results: dict, unit_step: float) -> list[str]:
    rows = ["| piece | ms: median (min–max) | share of the step |", "|---|---|---|"]
    medians = {}
    for piece, rounds in results.items():
        summary = harness.summarise([row["seconds"] * 1e3 for row in rounds])
        medians[piece] = summary["median"]
        rows.append(f"| {piece} | {harness.format_spread(summary)} | {summary['median'] / unit_step:.0%} |")
    derived = {"backward (encoder)": medians["forward+backward"] - medians["forward"] - medians["loss: all"],
               "rest": medians["step"] - medians["forward+backward"] - medians["optimizer"]}
    for piece, value in derived.items():
        rows.append(f"| {piece} (derived) | {value:.1f} | {value / unit_step:.0%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=("jax", "torch"), required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="calls of each piece per round")
    parser.add_argument("--xla-ops", type=int, default=0, help="JAX: list the N slowest XLA ops of a traced step")
    parser.add_argument("--hlo", help="JAX: write the step's optimised HLO here and count its op kinds")
    parser.add_argument("--torch-ops", type=int, default=0, help="PyTorch: list the N ops of a profiled step that "
                        "take the most self CPU time (torch.profiler)")
    args, rest = parser.parse_known_args()
    bench_args = train_step.parse_args(rest + ["--warmup", "0", "--steps", "1"])
    try:
        train_step.check_args(bench_args)
    except train_step.BadInput as error:
        raise SystemExit(f"profile_train_step.py: error: {error}") from None
    os.sched_setaffinity(0, set(range(bench_args.threads)))  # as train_step.py's children, before the pools start
    load_before = harness.print_load("start")
    pieces = (jax_pieces if args.side == "jax" else torch_pieces)(bench_args)
    hlo = pieces.pop("_hlo", None)
    results = harness.compare({name: (lambda call=call: timed(call, args.repeats)) for name, call in pieces.items()},
                              rounds=args.rounds)
    harness.print_load("end", since=load_before)
    step_ms = harness.median_of(results["step"], "seconds")["median"] * 1e3
    print(f"\n{args.side}: {bench_args.model}, stage '{bench_args.stage}', batch {bench_args.batch} × length "
          f"{bench_args.length}, {bench_args.dtype}; {args.rounds} interleaved rounds × {args.repeats} calls\n")
    print("\n".join(shares_table(results, step_ms)))
    if args.side == "jax" and args.hlo:
        text = hlo()
        Path(args.hlo).write_text(text)
        print(f"\nOptimised HLO of the step: {args.hlo}\n\n| op kind | count |\n|---|---|")
        for kind, count in hlo_counts(text).items():
            print(f"| {kind} | {count} |")
    if args.side == "jax" and args.xla_ops:
        times = xla_op_times(pieces["step"], args.repeats, hlo())
        traced = sum(times.values())
        print(f"\nXLA ops of one step by kind and phase (jax.profiler; shares of the {traced * 1e3:.0f} ms of XLA op "
              "time traced per step, summed over threads)\n\n| op kind | phase | ms per step | share |\n|---|---|---|---|")
        for (kind, phase), seconds in sorted(times.items(), key=lambda item: -item[1])[:args.xla_ops]:
            print(f"| {kind} | {phase} | {seconds * 1e3:.1f} | {seconds / traced:.0%} |")
        groups: dict[tuple[str, str], float] = collections.defaultdict(float)
        for (kind, phase), seconds in times.items():
            groups[(op_group(kind), phase)] += seconds
        print("\n| op group | phase | share of XLA op time |\n|---|---|---|")
        for (group, phase), seconds in sorted(groups.items(), key=lambda item: -item[1]):
            print(f"| {group} | {phase} | {seconds / traced:.0%} |")
    if args.side == "torch" and args.torch_ops:
        print_torch_ops(pieces["step"], args.repeats, args.torch_ops)


def print_torch_ops(run_step, repeats: int, count: int) -> None:
    """torch.profiler's table of the ops with the most self CPU time over `repeats` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        for _ in range(repeats):
            run_step()
    print(f"\ntorch.profiler, {repeats} step(s):\n")
    print(recorded.key_averages().table(sort_by="self_cpu_time_total", row_limit=count))


if __name__ == "__main__":
    main()
