"""The plan compiles the shipped paper config's steps for TPU slices it does not run on (libtpu, on this CPU), and
reads back what a user decides on: bytes per chip, FSDP's collectives, whether the stage fits.

The student is configs/jasper.py:smoke's, built from a small Qwen2 config.json (shapes only: no weights exist), so
that each compile takes seconds to a few minutes, not the 1.5B student's many minutes.
"""
from __future__ import annotations

import json
import re

import pytest

import kit
from embed_jax.models import shapes
from embed_jax.plan import __main__ as plan_main, compiled, planner, programs
from embed_jax.plan.topology import GIB, parse_topology
from embed_jax.train import config as train_config

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow

# Wide enough that the token table (split over fsdp) outweighs the few replicated vectors (biases, norms).
SMALL_QWEN2 = {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 32768}


def small_shape(**changes) -> dict:
    return {**shapes.named_shape("stella_en_1.5B_v5"), **SMALL_QWEN2, **changes}


@pytest.fixture(scope="module")
def two_host_plan():
    """jasper:smoke's stage 3 (every parameter trains) compiled for v5p:2x2x2: 8 chips on 2 hosts, FSDP over all."""
    config = kit.load_config_file("jasper", "smoke")
    topology = parse_topology("v5p:2x2x2")
    devices = plan_main.topology_devices(topology)
    mesh = programs.make_mesh(config, devices)
    stage_plan = planner.plan_stage(config, "stage3", small_shape(), topology, mesh, texts=1000, lengths=[32],
                                    log=lambda line: None)
    return devices, mesh, stage_plan


def test_the_smoke_config_compiles_for_a_two_host_slice(two_host_plan):
    devices, mesh, stage_plan = two_host_plan
    assert len(devices) == 8 and {device.process_index for device in devices} == {0, 1}
    assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    [bucket] = stage_plan.buckets
    assert bucket.length == 32 and bucket.analysis.flops > 0 and stage_plan.fits


def test_parameter_bytes_per_chip_are_the_count_times_four_bytes_over_eight_chips(two_host_plan):
    _, _, stage_plan = two_host_plan
    expected = stage_plan.trainable_params * 4 / 8  # fp32 parameters, split over fsdp = 8
    assert stage_plan.per_chip["trainable"] == pytest.approx(expected, rel=0.02)
    # Adam's two moments mirror them.
    assert stage_plan.per_chip["optimizer"] == pytest.approx(2 * expected, rel=0.02)
    # XLA's own buffer assignment holds what the shardings say, within its padding.
    arguments = stage_plan.buckets[0].analysis.memory.arguments
    assert arguments == pytest.approx(sum(stage_plan.per_chip.values()), rel=0.02)


def test_fsdp_gathers_weights_and_never_the_residual_stream(two_host_plan):
    _, mesh, stage_plan = two_host_plan
    analysis = stage_plan.buckets[0].analysis
    # Each layer's 7 kernels (q, k, v, o, gate, up, down) are gathered before use, forward and backward.
    assert analysis.collectives["all-gather"].count >= 7 * SMALL_QWEN2["num_hidden_layers"]
    # A weight gathered whole is width × something: bf16[256, 512]; an activation gathered would be bf16[8,32,256]
    # (the global batch × length × width) on every chip.
    text = stage_plan_text(stage_plan)
    gathered = re.findall(r"= (bf16\[[0-9,]+\])[^=]* all-gather(?:-start)?\(", text)
    assert "bf16[256,512]" in gathered or "bf16[512,256]" in gathered
    assert not [shape for shape in gathered if shape.startswith("bf16[8,32,")]


def stage_plan_text(stage_plan) -> str:
    return stage_plan.buckets[0].hlo_text


def test_a_student_too_big_for_the_chip_is_reported_over_by_how_much(tmp_path):
    """A 5.2e9-parameter token table, replicated on every v5e chip (data-parallel mesh): fp32 weights and Adam's
    moments alone need ~58 GiB of the chip's 16."""
    config = kit.load_config_file("jasper", "smoke")
    config.mesh.data, config.mesh.fsdp = 4, 1
    topology = parse_topology("v5e:2x2")
    mesh = programs.make_mesh(config, plan_main.topology_devices(topology))
    stage_plan = planner.plan_stage(config, "stage3", small_shape(hidden_size=128, vocab_size=40_000_000),
                                    topology, mesh, texts=1000, lengths=[16], log=lambda line: None)
    assert not stage_plan.fits
    over = (stage_plan.peak - 16 * GIB) / GIB
    assert over > 40 and stage_plan.verdict() == f"over by {over:.1f} GiB"
    assert stage_plan.knob().startswith("mesh: the weights and optimizer state alone need")


def test_the_cost_models_sentinels_are_added_back():
    # The v5p-32 stage-1 program's custom calls: the SparseCore offload pair is the cost model's sentinel.
    calls = {"AssumeGatherIndicesInBound": 2, "GatherScatterIndicesBitpacked": 4, "PrepareAsyncCallStart": 2,
             "AllocateBuffer": 20, "PrepareAsyncCallDone": 2}
    assert compiled.unpriced_call_count(calls) == 4
    assert compiled.estimated_seconds(-3.966576099395752, 4) == pytest.approx(0.0334, abs=1e-4)
    assert compiled.estimated_seconds(-2.75, 3) == pytest.approx(0.25)
    assert compiled.estimated_seconds(-0.5, 0) is None  # nothing to trust: no number
    assert compiled.estimated_seconds(0.2, 0) == 0.2


def test_collectives_are_read_from_the_program_text():
    text = "\n".join([
        "  %ag = bf16[1536,8960]{1,0} all-gather(bf16[96,8960]{1,0} %p), dimensions={0}",
        "  %ags = (bf16[96,1536]{1,0}, bf16[1536,1536]{1,0}) all-gather-start(bf16[96,1536]{1,0} %q)",
        "  %agd = bf16[1536,1536]{1,0} all-gather-done(%ags)",
        "  %ar = (f32[1024]{0}, f32[512]{0}) all-reduce(f32[1024]{0} %a, f32[512]{0} %b), to_apply=%add",
    ])
    found = compiled.collectives(text)
    assert (found["all-gather"].count, found["all-gather"].bytes) == (2, 2 * (1536 * 8960 + 1536 * 1536))
    assert (found["all-reduce"].count, found["all-reduce"].bytes) == (1, 4 * 1536)


def test_the_plan_writes_json_and_markdown(tmp_path, two_host_plan):
    _, _, stage_plan = two_host_plan
    from embed_jax.plan import report

    topology = parse_topology("v5p:2x2x2")
    document = report.plan_dict([stage_plan], topology, config_name="jasper_smoke", mesh_notes=["data=1 fsdp=8"])
    paths = report.write(tmp_path, "plan", document, report.markdown([stage_plan], topology,
                                                                     config_name="jasper_smoke",
                                                                     mesh_notes=["data=1 fsdp=8"]))
    stored = json.loads(paths[0].read_text())
    assert stored["stages"][0]["per_chip_bytes"]["trainable"] == stage_plan.per_chip["trainable"]
    assert "estimates" in stored["note"] and "| stage3 |" in paths[1].read_text()
    # scripts/plan_table.py: the stage as one row of a table across plans, its figures the plan's.
    [header, _, row] = plan_table_script().table([paths[0]], ["fsdp"]).splitlines()
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert "MFU (est.)" in header and cells[:5] == ["v5p-16", "fsdp", "stage3", "1×8",
                                                    f"{stage_plan.peak / GIB:.1f} / {stage_plan.capacity / GIB:.0f}"]
    assert cells[5] == "fits"


def plan_table_script():
    return kit.load_script("plan_table")


def test_the_table_script_refuses_a_folder_without_plans(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"no plan_\*\.json in .*run python -m embed_jax.plan first"):
        plan_table_script().main([str(tmp_path)])


def test_two_shallow_compiles_extrapolate_to_a_deeper_student():
    """A 4-layer student's plan against the line through its 2- and 3-layer students' plans: FLOPs, collectives and
    argument bytes grow by exactly one layer's worth per layer; the peak within a few percent."""
    config = kit.load_config_file("jasper", "smoke")
    topology = parse_topology("v5p:2x2x1")
    mesh = programs.make_mesh(config, plan_main.topology_devices(topology))
    options = dict(texts=1000, lengths=[16], log=lambda line: None)
    shape = small_shape(num_hidden_layers=4)
    full = planner.plan_stage(config, "stage3", shape, topology, mesh, **options)
    guess = planner.plan_stage_from_shallow(config, "stage3", shape, topology, mesh, (2, 3), **options)
    [full_bucket], [guess_bucket] = full.buckets, guess.buckets
    assert guess.trainable_params == full.trainable_params and guess.per_chip == full.per_chip
    assert guess_bucket.analytic_flops == pytest.approx(full_bucket.analytic_flops)
    assert guess_bucket.analysis.flops == pytest.approx(full_bucket.analysis.flops, rel=0.01)
    assert guess_bucket.analysis.collectives["all-gather"].count == full_bucket.analysis.collectives["all-gather"].count
    assert guess_bucket.analysis.memory.peak == pytest.approx(full_bucket.analysis.memory.peak, rel=0.05)
    assert "extrapolated to 4 layers from compiles of 2 and 3 layers" in guess.note


def test_a_stage_on_its_own_data_parallel_mesh_gathers_no_weights():
    """jasper:smoke's stage 1 (frozen encoder) with stage1.mesh='data=-1,fsdp=1' on v5p:2x2x2: the plan compiles it
    on 8 × 1, as training would build it, and the frozen weights are replicated, so nothing is all-gathered."""
    config = kit.load_config_file("jasper", "smoke")
    config.stage1.mesh = "data=-1,fsdp=1"
    topology = parse_topology("v5p:2x2x2")
    devices = plan_main.topology_devices(topology)
    mesh = programs.make_mesh(config, devices, "stage1")
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(programs.make_mesh(config, devices, "stage3").shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    stage_plan = planner.plan_stage(config, "stage1", small_shape(), topology, mesh, texts=1000, lengths=[32],
                                    log=lambda line: None)
    assert stage_plan.buckets[0].analysis.collectives["all-gather"].bytes < 1 << 20  # not a weight: under 1 MiB


def test_frozen_parameters_replicated_over_fsdp_are_whole_on_every_chip_and_never_gathered():
    """jasper:smoke's stage 2 training the last of 4 layers, replicate_frozen, on v5p:2x2x2 (FSDP over all 8 chips):
    every chip holds the frozen parameters whole (count × 4 bytes), and what is all-gathered is at most the trainable
    weights in bf16 for the forward and the backward pass plus activations. The same compile with the frozen
    parameters split: 43 all-gathers of 19.6 MB, past this bound; replicated: 21 of 16.1 MB."""
    config = kit.load_config_file("jasper", "smoke")
    config.stage2.last_layers = 1
    config.stage2.replicate_frozen = True
    topology = parse_topology("v5p:2x2x2")
    mesh = programs.make_mesh(config, plan_main.topology_devices(topology), "stage2")
    stage_plan = planner.plan_stage(config, "stage2", small_shape(num_hidden_layers=4), topology, mesh, texts=1000,
                                    lengths=[32], log=lambda line: None)
    assert stage_plan.per_chip["frozen"] == stage_plan.frozen_params * 4
    gathered = stage_plan.buckets[0].analysis.collectives["all-gather"].bytes
    assert gathered < 2 * stage_plan.trainable_params * 2 + (2 << 20)



def test_a_pair_stage_compiles_with_its_labels():
    """A supervised pair stage (kind='pairs') plans like a text stage, its batch carrying the pair labels that its
    pair term reads, and it fits with a largest-batch estimate as a text stage has."""
    config = kit.load_config_file("jasper", "smoke")
    config.stage2_pairs = train_config.stage("heads+last_layers", 1e-4, 10, kind="pairs", last_layers=2,
                                           contrastive_kl_weight=1.0)
    config.stage_order = ("stage2_pairs",)
    topology = parse_topology("v5p:2x2x2")
    mesh = programs.make_mesh(config, plan_main.topology_devices(topology), "stage2_pairs")
    program = programs.build_stage_program(config, "stage2_pairs", small_shape(), mesh)
    assert set(program.arguments(32)[3]) == {"input_ids", "attention_mask", "teacher", "pair", "is_query"}
    stage_plan = planner.plan_stage(config, "stage2_pairs", small_shape(), topology, mesh, texts=1000, lengths=[32],
                                    log=lambda line: None)
    assert stage_plan.kind == "pairs" and stage_plan.fits and stage_plan.largest_batch() > 0


def test_the_compute_floor_is_the_stage_on_one_chip_without_collectives(two_host_plan):
    """jasper:smoke's stage 3 on one v5p chip at batches 3 and 5: one sequence's price is positive, and one chip's
    share of the slice's work costs less than the sharded step, which adds the collectives (compute_floor.py)."""
    from embed_jax.plan import compute_floor, report

    devices, _, stage_plan = two_host_plan
    config = kit.load_config_file("jasper", "smoke")
    topology = parse_topology("v5p:2x2x2")
    floor = compute_floor.compute_floor(config, stage_plan, small_shape(), topology, devices, log=lambda line: None)
    assert floor.batches == (3, 5) and floor.per_sequence_seconds > 0 and floor.fixed_seconds >= 0
    assert 0 < floor.seconds < stage_plan.longest.analysis.step_seconds
    assert floor.mfu > stage_plan.longest.mfu(topology)
    stage_plan.floor = floor
    assert "compute floor (estimate; one chip at batches 3 and 5, no collectives)" in report.console(
        [stage_plan], topology, mesh_notes=[])
    assert report.stage_dict(stage_plan, topology)["compute_floor_estimate"]["batches"] == (3, 5)
    stage_plan.floor = None
