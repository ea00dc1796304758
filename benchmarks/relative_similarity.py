"""Relative-similarity loss (docs/method.md §3.3), forward + backward: embed_jax's exact merge-sort formulation against
the naive P x P formulation that the public code uses (torch), and the same naive formulation in JAX.

    python benchmarks/relative_similarity.py                 # m = 128 and 512, d = 1152 (the demo teacher's dim)
    python benchmarks/relative_similarity.py --sizes 64 128 512 1024 --rounds 10
    python benchmarks/relative_similarity.py --gpu           # torch on CUDA, JAX on its GPU backend

Each (implementation, m) runs in its own long-lived child process, so that peak memory is that case's alone:
  peak added    on CPU, how far the process's resident memory rose above its level just before the timed calls
                (Linux VmHWM, reset through /proc/self/clear_refs); on GPU, how far the framework's device
                allocator's peak rose above what was in use before them (torch.cuda / jax memory_stats). JAX
                compiles before that point; the host memory its compiler needed is reported apart (compile RSS);
  XLA bytes     for the JAX rows, the compiled program's own figure (arguments + outputs + temporaries,
                `compiled.memory_analysis()`), known without running — so it also says what the naive JAX program
                would need where it cannot run.
The naive runs at sizes that cannot fit fail at their first P x P allocation, and the error is reported (on CPU,
torch runs under an address-space limit so that it fails at once instead of pushing the machine into swap).
Inputs: unit vectors like real sentence embeddings (a shared direction gives cosines ≈ 0.3 ± 0.1) for the teacher,
and a noisy copy for the student. Per m, the implementations take turns, A B C A B C …, one timed call each per
round, `--rounds` rounds after one warm-up call (benchmarks/harness.py): the table gives the median time with its
min–max and the median of the rounds' ratios. The load average is printed at the start and the end, with a warning
when the machine is busy.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

DIM = 1152
MARGIN = 0.015
IMPLEMENTATIONS = ("embed_jax", "naive_jax", "naive_torch")
NAIVE_ADDRESS_LIMIT_GB = 16


# ----------------------------------------------------------------------------------------------------------------
# Memory probes


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


class HostMemory:
    """Peak resident memory added since `start` (Linux ≥ 4.0: writing 5 to clear_refs resets VmHWM)."""

    def start(self) -> None:
        self.baseline = _status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def added_mb(self) -> float:
        return _status_mb("VmHWM") - self.baseline


class TorchCudaMemory:
    def start(self) -> None:
        import torch

        torch.cuda.synchronize()
        self.baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()

    def added_mb(self) -> float:
        import torch

        return (torch.cuda.max_memory_allocated() - self.baseline) / 2**20


class JaxDeviceMemory:
    """JAX's allocator keeps a peak but cannot reset it: the peak may include compile-time autotuning buffers,
    which can only overstate the JAX rows."""

    def start(self) -> None:
        import jax

        self.device = jax.devices()[0]
        self.baseline = self.device.memory_stats()["bytes_in_use"]

    def added_mb(self) -> float:
        return (self.device.memory_stats()["peak_bytes_in_use"] - self.baseline) / 2**20


# ----------------------------------------------------------------------------------------------------------------
# The cases (each runs inside its own worker process)


def make_inputs(m: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    shared = rng.normal(size=DIM)
    shared /= np.linalg.norm(shared)
    teacher = 0.55 * shared + rng.normal(size=(m, DIM)) / np.sqrt(DIM)
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    student = teacher + 0.5 * rng.normal(size=(m, DIM)) / np.sqrt(DIM)
    student /= np.linalg.norm(student, axis=1, keepdims=True)
    return student.astype(np.float32), teacher.astype(np.float32)


def first_call(run, memory) -> dict:
    """The warm-up call: its loss and the memory it added (later calls reuse what it allocated)."""
    memory.start()
    loss = run()
    return {"loss": loss, "added_mb": memory.added_mb()}


def timed_call(run):
    start = time.perf_counter()
    run()
    return {"seconds": time.perf_counter() - start}


def naive_jax_loss(student, teacher):
    """The P x P formulation, written in jnp as the public code writes it in torch."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rows, cols = np.triu_indices(student.shape[0], k=1)
    p = jnp.matmul(student, student.T, precision="highest")[rows, cols]
    q = jnp.matmul(teacher, teacher.T, precision="highest")[rows, cols]
    p_diff = p[None, :] - p[:, None]
    q_diff = q[None, :] - q[:, None]
    upper = jnp.triu(jnp.ones_like(p_diff, dtype=bool), k=1)
    label = jnp.where(q_diff < 0, 1.0, -1.0)
    num_pairs = len(rows)  # a Python int: the count of pairs of pairs overflows int32 from m = 304
    return jnp.sum(jnp.where(upper, jax.nn.relu(p_diff * label + MARGIN), 0.0)) / (num_pairs * (num_pairs - 1) / 2)


def run_jax(implementation: str, m: int):
    """(setup, run_round): compiled and called once; None instead of run_round where it cannot run."""
    import jax

    from embed_jax import losses

    on_gpu = jax.default_backend() == "gpu"
    loss_fn = losses.relative_similarity_loss if implementation == "embed_jax" else naive_jax_loss
    student, teacher = jax.device_put(make_inputs(m))
    compile_memory = HostMemory()
    compile_memory.start()
    compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(student, teacher).compile()
    analysis = compiled.memory_analysis()
    xla_bytes = analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
    result = {"xla_mb": xla_bytes / 2**20, "compile_rss_mb": compile_memory.added_mb()}
    if on_gpu:
        capacity = jax.devices()[0].memory_stats().get("bytes_limit", 0)
    else:
        capacity = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if xla_bytes > 0.9 * capacity:
        result["error"] = f"would need {xla_bytes / 2**30:,.0f} GiB (XLA's own estimate); not run"
        return result, None

    def run():
        loss, grad = compiled(student, teacher)
        jax.block_until_ready(grad)
        return float(loss)

    result.update(first_call(run, JaxDeviceMemory() if on_gpu else HostMemory()))
    return result, lambda: timed_call(run)


def run_torch(m: int, on_gpu: bool):
    """(setup, run_round): called once; None instead of run_round where the P x P tensors do not fit."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(os.cpu_count())  # the threads XLA's CPU client uses
    device = "cuda" if on_gpu else "cpu"
    student_np, teacher_np = make_inputs(m)
    teacher = torch.from_numpy(teacher_np).to(device)

    def score_diff(embedding):  # RAG-Retrieval model_distill.py, get_score_diff
        scores = torch.matmul(embedding, embedding.T)
        scores = scores[torch.triu(torch.ones_like(scores), diagonal=1).bool()]
        diff = scores.reshape((1, -1)) - scores.reshape((-1, 1))
        return diff[torch.triu(torch.ones_like(diff), diagonal=1).bool()]

    def run():
        student = torch.from_numpy(student_np).to(device).requires_grad_(True)
        with torch.no_grad():
            label = torch.where(score_diff(teacher) < 0, 1, -1)
        loss = F.relu(score_diff(student) * label + MARGIN).mean()
        loss.backward()
        return float(loss)  # waits for the device

    try:
        return first_call(run, TorchCudaMemory() if on_gpu else HostMemory()), lambda: timed_call(run)
    except (RuntimeError, MemoryError) as error:  # the allocator refusing the P x P tensors
        needed = (m * (m - 1) // 2) ** 2 * 4 / 2**30
        return {"error": f"{str(error).splitlines()[0][:200]} (one P x P fp32 tensor is {needed:,.0f} GiB)"}, None


def worker(implementation: str, m: int, on_gpu: bool) -> None:
    protocol = harness.claim_stdout()
    if implementation == "naive_torch":
        if not on_gpu:  # CUDA reserves a huge address space: the limit is for the CPU run only
            limit = NAIVE_ADDRESS_LIMIT_GB * 2**30
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        setup, run_round = run_torch(m, on_gpu)
    else:
        if not on_gpu:
            os.environ["JAX_PLATFORMS"] = "cpu"
        setup, run_round = run_jax(implementation, m)
    if run_round is None:
        print(json.dumps(setup), file=protocol, flush=True)  # the ready line says why; no rounds follow
        return
    harness.serve_rounds(protocol, run_round, setup)


# ----------------------------------------------------------------------------------------------------------------
# The driver


def measure_size(m: int, rounds: int, on_gpu: bool) -> dict[str, dict]:
    """Every implementation at one m, interleaved: {implementation: its setup + 'rounds' (the timed calls)}."""
    environment = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")  # JAX takes GPU memory as it needs it
    sides, results = {}, {}
    try:
        for implementation in IMPLEMENTATIONS:
            command = [sys.executable, __file__, "--worker", implementation, "--sizes", str(m)]
            try:
                side = harness.ChildSide(implementation, command + (["--gpu"] if on_gpu else []), env=environment)
            except harness.SideFailed as error:
                results[implementation] = {"error": f"worker failed: {error}"}
                continue
            results[implementation] = dict(side.setup)
            if "error" in side.setup:
                side.close()
            else:
                sides[implementation] = side
        for implementation, calls in harness.compare(sides, rounds=rounds).items():
            results[implementation]["rounds"] = [call["seconds"] for call in calls]
    finally:
        for side in sides.values():
            side.close()
    return results


def table(results: dict[tuple[str, int], dict], sizes: list[int], memory_kind: str) -> str:
    rows = [
        f"| m | P = m(m-1)/2 | implementation | fwd+bwd time | vs naive torch | peak {memory_kind} added "
        "| vs naive torch | XLA bytes | compile RSS | loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in sizes:
        reference = results[("naive_torch", m)]
        for implementation in IMPLEMENTATIONS:
            r = results[(implementation, m)]
            ran = "rounds" in r
            compare = ran and "rounds" in reference and implementation != "naive_torch"
            if ran:
                ms = harness.summarise([seconds * 1e3 for seconds in r["rounds"]])
            if compare:
                faster = harness.summarise([b / a for a, b in zip(r["rounds"], reference["rounds"])])
            cells = [
                str(m),
                f"{m * (m - 1) // 2:,}",
                implementation,
                harness.format_spread(ms, " ms") if ran else "—",
                harness.format_spread(faster, "x faster") if compare else "",
                f"{r['added_mb']:,.1f} MB" if ran else "—",
                f"{reference['added_mb'] / max(r['added_mb'], 0.1):,.0f}x less" if compare else "",
                f"{r['xla_mb']:,.1f} MB" if "xla_mb" in r else "",
                f"{r['compile_rss_mb']:.0f} MB" if "compile_rss_mb" in r else "",
                f"{r['loss']:.6f}" if "loss" in r else r.get("error", ""),
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed calls per implementation")
    parser.add_argument("--gpu", action="store_true", help="torch on CUDA and JAX on its GPU backend")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.sizes[0], args.gpu)
        return

    import platform

    load_before = harness.print_load("start")
    results = {}
    for m in args.sizes:
        for implementation, result in measure_size(m, args.rounds, args.gpu).items():
            results[(implementation, m)] = result
            print(f"m={m} {implementation}: {result}", file=sys.stderr, flush=True)
    harness.print_load("end", since=load_before)
    where = "GPU (torch CUDA, JAX GPU)" if args.gpu else (
        f"CPU, {os.cpu_count()} threads ({platform.processor() or platform.machine()})")
    print(f"\nRelative-similarity loss, forward + backward, d = {DIM}, fp32, {where}, {args.rounds} interleaved "
          f"rounds: median (min–max)\n")
    print(table(results, args.sizes, "device memory" if args.gpu else "RSS"))


if __name__ == "__main__":
    main()
