"""The compute floor's arithmetic (embed_jax/plan/compute_floor.py), against a brute-force line through two points."""
from __future__ import annotations

import pytest

from embed_jax.plan import compiled, compute_floor, planner
from embed_jax.plan.topology import parse_topology


def stage_plan(mesh: dict[str, int], batch_size: int, analytic_flops: float) -> planner.StagePlan:
    memory = compiled.Memory(0, 0, 0, 0, 0)
    analysis = compiled.Analysis(memory, 0.0, 0.05, 0, 0.05, {}, {}, 0)
    bucket = planner.BucketPlan(512, analysis, analytic_flops, 0.0)
    return planner.StagePlan("stage3", "records", mesh, batch_size, 0, 0, {}, [bucket], 10, 1000, 95 * 2**30, False,
                             True)


@pytest.mark.parametrize("global_batch, chips, expected", [(128, 64, (3, 5)), (128, 16, (8, 10)), (8, 8, (3, 5)),
                                                          (100, 16, (7, 9))])
def test_one_chip_batches_cover_the_per_chip_share_and_the_losses_least(global_batch, chips, expected):
    assert compute_floor.one_chip_batches(global_batch, chips) == expected


def test_the_floor_is_the_line_through_two_one_chip_steps_scaled_to_a_chips_share():
    topology = parse_topology("v5p-128")  # 64 chips
    per_sequence, fixed = 0.0106, 0.0486  # seconds: a sequence's forward and backward; the whole optimizer update
    batches = (3, 5)
    steps = [fixed + per_sequence * batch for batch in batches]
    plan = stage_plan({"data": 1, "fsdp": 16, "tensor": 4}, 128, analytic_flops=5.3e14)
    floor = compute_floor.floor_of(steps, batches, plan, topology)
    assert floor.per_sequence_seconds == pytest.approx(per_sequence)
    assert floor.fixed_seconds == pytest.approx(fixed)
    # Each chip: 128 / 64 sequences, and the update of the 1 / (16 × 4) of the parameters it holds.
    assert floor.seconds == pytest.approx(per_sequence * 2 + fixed / 64)
    assert floor.mfu == pytest.approx(5.3e14 / (floor.seconds * 64 * 459e12))


def test_the_cost_model_adds_an_independent_collective_to_compute():
    """What the floor rests on: on v5p:2x2x1 an 8192² bf16 matmul and an all-gather that does not depend on it are
    priced, in one program, at the sum of their prices alone (docs/launch.md: 2.79 + 0.74 = 3.53 ms), not at the
    larger of them as overlapped hardware would run them."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from embed_jax.plan import __main__ as plan_main

    mesh = Mesh(plan_main.topology_devices(parse_topology("v5p:2x2x1")), ("chips",))
    whole, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("chips"))
    square = jax.ShapeDtypeStruct((8192, 8192), jnp.bfloat16, sharding=whole)
    tall = jax.ShapeDtypeStruct((4 * 8192, 8192), jnp.bfloat16, sharding=split)

    def price(function) -> float:
        return jax.jit(function).lower(square, tall).compile().cost_analysis()["optimal_seconds"]

    gather = lambda w: jax.lax.with_sharding_constraint(w, whole) * 2  # noqa: E731
    matmul_alone = price(lambda a, w: a @ a)
    gather_alone = price(lambda a, w: gather(w))
    both = price(lambda a, w: (a @ a, gather(w)))
    assert matmul_alone > 0 and gather_alone > 0
    assert both == pytest.approx(matmul_alone + gather_alone, rel=0.02)
    assert both > 1.1 * max(matmul_alone, gather_alone)


def test_on_a_two_dimensional_torus_the_tpu_compiler_turns_a_reduce_scatter_into_an_all_reduce():
    """Why the plans show FSDP's gradients all-reduced whole and never reduce-scattered (docs/launch.md): on the
    slices' 2-D and 3-D tori, libtpu 0.0.42's `reduce-scatter-decomposer` pass rewrites a reduce-scatter as an
    all-reduce of each chip's whole block followed by its slice, so no layout of ours can make the compiled program
    hold one (an explicit `psum_scatter` under `shard_map` compiled the same). On v6e:2x2 the same program keeps it."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from embed_jax.plan import __main__ as plan_main
    from embed_jax.plan.compiled import collectives as count_collectives

    def compiled_collectives(topology_name: str):
        mesh = Mesh(plan_main.topology_devices(parse_topology(topology_name)), ("chips",))
        chips = mesh.devices.size
        summed = jax.shard_map(lambda block: jax.lax.psum_scatter(block, "chips", scatter_dimension=0, tiled=True),
                               mesh=mesh, in_specs=PartitionSpec("chips"), out_specs=PartitionSpec("chips"))
        blocks = jax.ShapeDtypeStruct((chips * 1024, 512), jnp.bfloat16, sharding=NamedSharding(mesh, PartitionSpec(
            "chips")))
        lowered = jax.jit(summed).lower(blocks)
        assert "reduce_scatter" in lowered.as_text()  # what jax asked for
        return count_collectives(lowered.compile().as_text())

    torus = compiled_collectives("v6e:4x4")
    assert torus["reduce-scatter"].count == 0 and torus["all-reduce"].count == 1
    assert torus["all-reduce"].bytes == 1024 * 512 * 2  # each chip's whole block, not its sixteenth
    ring = compiled_collectives("v6e:2x2")
    assert ring["reduce-scatter"].count == 1 and ring["reduce-scatter"].bytes == 1024 * 512 * 2 // 4


def test_an_over_stage_with_replicated_frozen_parameters_names_that_key_and_what_it_frees():
    """The first knob of a stage over capacity whose frozen parameters are replicated: splitting them, and the GiB a
    chip that frees (their bytes less a chip's fsdp share)."""
    plan = stage_plan({"data": 1, "fsdp": 16, "tensor": 1}, 128, analytic_flops=1e12)
    plan.per_chip = {"trainable": 0, "frozen": 16 * 2**30, "optimizer": 0, "batch": 0}
    plan.replicate_frozen = True
    assert plan.knob() == ("frozen: stage3.replicate_frozen=False splits the frozen parameters over fsdp=16 (frees "
                           "15.0 GiB per chip)")


@pytest.mark.parametrize("floor_seconds, bounds", [(0.04, True), (0.08, False)])
def test_a_floor_above_the_step_is_reported_as_no_bound_and_gives_no_ceiling(floor_seconds, bounds):
    """A one-chip line that prices a chip's share above the sharded step bounds nothing (v6e-16 at batch 256: 0.302 s
    against 0.188 s); the report says so instead of printing a ceiling below the step's own MFU."""
    from embed_jax.plan import report

    plan = stage_plan({"data": 1, "fsdp": 16, "tensor": 1}, 128, analytic_flops=1e12)
    step = plan.longest.analysis.step_seconds
    plan.floor = compute_floor.ComputeFloor(0.001, 0.01, (8, 10), floor_seconds, 0.5)
    line = report.floor_line(plan)
    assert report.floor_bounds_step(plan) is bounds and step == pytest.approx(0.05)
    assert ("MFU ceiling of 50%" in line) is bounds
    assert ("above the step's 0.05 s, so no bound here and no ceiling" in line) is not bounds
