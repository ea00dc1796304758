"""What a compiled TPU program says about itself: per-chip memory, FLOPs, the compiler's time estimate, collectives.

    memory        `memory_analysis()`: XLA's buffer assignment per chip (arguments, outputs, aliases, temporaries)
    cost          `cost_analysis()`: flops and `optimal_seconds`, the TPU cost model's estimate of the step
    collectives   every all-gather / all-reduce / reduce-scatter / all-to-all / collective-permute in `as_text()`,
                  with the bytes of its result on one chip

Two limits of the cost model, measured on these programs (docs/launch.md, "The plan"):
- a custom call it cannot price counts as −1 s in `optimal_seconds` (so every train step came back negative): the
  estimate here adds 1 s back per such call, and gives no estimate when the sum stays negative;
- a loop body is priced (and its collectives listed) once, not once per trip: the plan says how many loops it saw.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Any

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_INSTRUCTION = re.compile(
    r"=\s*(?P<shape>\S.*?)\s+(?P<op>all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
    r"(?P<start>-start)?\(")
_ARRAY = re.compile(r"\b(?P<dtype>pred|[suf](?:4|8|16|32|64)|bf16|f8e\w+|c64|c128)\[(?P<dims>[0-9,]*)\]")
_CUSTOM_CALL = re.compile(r'custom-call\(.*?custom_call_target="(?P<target>[^"]+)"')
_WHILE = re.compile(r"\swhile\(")
_BITS = {"pred": 8, "c64": 64, "c128": 128, "bf16": 16}

# The cost model's price for a custom call it cannot cost (its sentinel), in seconds.
UNPRICED_CALL_SECONDS = -1.0
# The TPU compiler refuses a program that does not fit the chip, e.g. "RESOURCE_EXHAUSTED: Ran out of memory on HBM,
# the total memory required for HLO temporaries (76.33G) exceeds available HBM (15.75G)." The first figure is the
# program's whole need (arguments included: measured on a 5.2e9-parameter table, 57 GiB of weights and AdamW moments
# plus 19 GiB of gradients), the second what the chip leaves to programs.
_OUT_OF_MEMORY = re.compile(r"required for HLO temporaries \((?P<need>[0-9.]+)(?P<need_unit>[KMGT]?)\) exceeds "
                            r"available HBM \((?P<have>[0-9.]+)(?P<have_unit>[KMGT]?)\)")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# Custom calls the cost model prices at the sentinel. Measured: the 1.5B student's stage-1 program for v5p-32 came back
# at −3.967 s holding 2 PrepareAsyncCallStart + 2 PrepareAsyncCallDone (SparseCore offload) beside 20 AllocateBuffer,
# 4 GatherScatterIndicesBitpacked and 2 AssumeGatherIndicesInBound; small programs holding only the last three came
# back positive. ConcatBitcast is the other call seen priced so in compiled train steps.
UNPRICED_TARGETS = ("PrepareAsyncCallStart", "PrepareAsyncCallDone", "ConcatBitcast")


def _bytes(dtype: str, dims: str) -> int:
    bits = _BITS.get(dtype) or (8 if dtype.startswith("f8") else int(re.sub(r"\D", "", dtype)))
    count = 1
    for dim in filter(None, dims.split(",")):
        count *= int(dim)
    return count * bits // 8


def collective_bytes(op: str, started: bool, shape: str) -> int:
    """Bytes one chip receives as the result of one collective. An async `-start`'s tuple holds its operands and then
    its results (plus scalar contexts for a permute): count the results."""
    arrays = [_bytes(m["dtype"], m["dims"]) for m in _ARRAY.finditer(shape)]
    if not arrays:
        return 0
    if started and op in ("all-gather", "all-reduce", "reduce-scatter", "all-to-all") and len(arrays) > 1 \
            and shape.lstrip().startswith("(("):
        return sum(arrays[len(arrays) // 2:])
    if started and op == "all-gather" and len(arrays) >= 2:
        return sum(arrays[len(arrays) // 2:])
    if started and op == "collective-permute":
        return arrays[0]
    return sum(arrays)


@dataclasses.dataclass
class Collective:
    count: int = 0
    bytes: int = 0


def collectives(hlo_text: str) -> dict[str, Collective]:
    """{kind: (count, bytes per chip)} over the module's instructions (a loop body's counted once)."""
    found = {kind: Collective() for kind in COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.search(line)
        if match is None or "-done(" in line:
            continue
        entry = found[match["op"]]
        entry.count += 1
        entry.bytes += collective_bytes(match["op"], bool(match["start"]), match["shape"])
    return found


def custom_calls(hlo_text: str) -> dict[str, int]:
    return dict(collections.Counter(m["target"] for m in _CUSTOM_CALL.finditer(hlo_text)))


@dataclasses.dataclass
class Memory:
    """Per chip, in bytes (XLA's buffer assignment)."""
    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    code: int

    @property
    def peak(self) -> int:
        """Arguments + outputs that do not reuse a donated argument + temporaries + the program itself."""
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code


@dataclasses.dataclass
class Refusal:
    """A compile the TPU compiler refused for memory: what the program needs per chip, what the chip offers."""
    needed: int
    available: int
    message: str


def refusal(error: Exception) -> Refusal | None:
    """The memory refusal in a compile error, None for any other error."""
    message = str(error)
    match = _OUT_OF_MEMORY.search(message)
    if "RESOURCE_EXHAUSTED" not in message or match is None:
        return None
    need = float(match["need"]) * _UNITS[match["need_unit"]]
    have = float(match["have"]) * _UNITS[match["have_unit"]]
    return Refusal(int(need), int(have), message.strip().splitlines()[0])


@dataclasses.dataclass
class Analysis:
    memory: Memory
    flops: float  # per chip, as compiled (loop bodies once)
    optimal_seconds: float | None  # the cost model's raw figure
    unpriced_calls: int
    step_seconds: float | None  # corrected estimate, None where there is none
    collectives: dict[str, Collective]
    custom_calls: dict[str, int]
    loops: int
    refused: Refusal | None = None


def estimated_seconds(optimal_seconds: float | None, unpriced_calls: int) -> float | None:
    """`optimal_seconds` with the sentinels added back; None when it is missing or stays ≤ 0 (nothing to trust)."""
    if optimal_seconds is None:
        return None
    corrected = optimal_seconds - unpriced_calls * UNPRICED_CALL_SECONDS
    return corrected if corrected > 0 else None


def unpriced_call_count(calls: dict[str, int]) -> int:
    """How many −1 s sentinels `optimal_seconds` holds: one per custom call of a target the cost model cannot price
    (UNPRICED_TARGETS)."""
    return sum(count for target, count in calls.items() if target in UNPRICED_TARGETS)


def refused_analysis(refused: Refusal, arguments: int) -> Analysis:
    """What a refused compile still says: the program's need per chip (as its peak), `arguments` of it known from
    the shardings; no cost, no collectives."""
    memory = Memory(arguments, 0, 0, max(0, refused.needed - arguments), 0)
    return Analysis(memory, 0.0, None, 0, None, {kind: Collective() for kind in COLLECTIVES}, {}, 0, refused)


def analyse(compiled: Any) -> Analysis:
    """The analysis of a `jax.jit(...).lower(...).compile()` result."""
    stats = compiled.memory_analysis()
    memory = Memory(int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes),
                    int(stats.alias_size_in_bytes), int(stats.temp_size_in_bytes),
                    int(stats.generated_code_size_in_bytes))
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    text = compiled.as_text()
    calls = custom_calls(text)
    optimal = cost.get("optimal_seconds")
    optimal = None if optimal is None else float(optimal)
    unpriced = unpriced_call_count(calls)
    return Analysis(memory, float(cost.get("flops", 0.0)), optimal, unpriced, estimated_seconds(optimal, unpriced),
                    collectives(text), calls, len(_WHILE.findall(text)))
