"""python -m embed_jax.plan: topology names, and every bad input refused in one line before anything compiles."""
from __future__ import annotations

import json

import pytest

from embed_jax.plan import __main__ as plan_main
from embed_jax.plan import topology
from embed_jax.models import shapes

SMOKE = "--config=configs/jasper.py:smoke"


@pytest.mark.parametrize("name, jax_name, chips, accelerator", [
    ("v5p-32", "v5p:2x2x4", 16, "v5p-32"), ("v5p-8", "v5p:2x2x1", 4, "v5p-8"), ("v5p-128", "v5p:4x4x4", 64, "v5p-128"),
    ("v5litepod-16", "v5e:4x4", 16, "v5litepod-16"), ("v5e-64", "v5e:8x8", 64, "v5litepod-64"),
    ("v4-32", "v4:2x2x4", 16, "v4-32"), ("v6e-16", "v6e:4x4", 16, "v6e-16"), ("v5p:2x2x2", "v5p:2x2x2", 8, "v5p-16"),
    ("v5e:2x2", "v5e:2x2", 4, "v5litepod-4"),
])
def test_gcloud_and_jax_names(name, jax_name, chips, accelerator):
    slice_ = topology.parse_topology(name)
    assert (slice_.jax_name, slice_.num_chips, slice_.accelerator_type) == (jax_name, chips, accelerator)


def run_plan(capsys, *arguments: str) -> tuple[int, str]:
    code = plan_main.main([*arguments, "--out=/nonexistent/plan-never-written"])
    return code, capsys.readouterr().err.strip()


def test_unknown_topology_lists_the_known_ones(capsys):
    code, error = run_plan(capsys, SMOKE, "--topology=v9z-8")
    assert code == 2 and len(error.splitlines()) == 1
    assert "--topology='v9z-8'" in error and "v5p-32" in error and "v5litepod-16" in error


def test_a_slice_size_that_does_not_exist_is_refused(capsys):
    code, error = run_plan(capsys, SMOKE, "--topology=v5p-12")
    assert code == 2 and "no v5p slice of size 12" in error


def test_missing_libtpu_names_the_extra(capsys, monkeypatch):
    real = plan_main.importlib.util.find_spec
    monkeypatch.setattr(plan_main.importlib.util, "find_spec", lambda name: None if name == "libtpu" else real(name))
    code, error = run_plan(capsys, SMOKE, "--topology=v5p-8")
    assert code == 2 and len(error.splitlines()) == 1 and "pip install -e '.[plan]'" in error


def test_a_mesh_that_does_not_divide_the_chips(capsys):
    code, error = run_plan(capsys, SMOKE, "--topology=v5p-8", "--mesh=data=3")
    assert code == 2 and len(error.splitlines()) == 1 and "needs 3 devices but 4 are available" in error


@pytest.mark.parametrize("stage_mesh, message", [
    ("data=3", "config stage2.mesh: {'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices but 4 are available"),
    ("data=2,fsdq=2", "config key stage2.mesh='data=2,fsdq=2': write the mesh as data=D,fsdp=F"),
])
def test_a_stage_mesh_that_cannot_work_is_refused_before_any_compile(capsys, stage_mesh, message):
    code, error = run_plan(capsys, SMOKE, "--topology=v5p-8", f"--config.stage2.mesh={stage_mesh}")
    assert code == 2 and len(error.splitlines()) == 1 and message in error, error


def test_shallow_students_shallower_than_an_unfrozen_stage_are_refused(capsys):
    # configs/jasper.py's stage 2 trains the last 3 layers: a 2-layer student cannot stand for it.
    code, error = run_plan(capsys, SMOKE, "--topology=v5p-8", "--layers_from=2,3")
    assert code == 2 and len(error.splitlines()) == 1
    assert "stage2 trains the last 3 layers (stage2.last_layers)" in error and "--layers_from=3,4" in error


def test_a_batch_that_does_not_divide_the_data_parallel_size(capsys):
    # jasper:smoke has a global batch of 8; FSDP over a v5p-32's 16 chips cannot split it.
    code, error = run_plan(capsys, SMOKE, "--topology=v5p-32")
    assert code == 2 and len(error.splitlines()) == 1
    assert "data.global_batch_size=8 is not divisible by the data-parallel size 16" in error


def test_an_init_folder_without_config_json_and_no_shape(capsys, tmp_path):
    code, error = run_plan(capsys, SMOKE, "--topology=v5p-8", f"--config.model.init_from={tmp_path / 'my_model'}")
    assert code == 2 and len(error.splitlines()) == 1
    assert "model.init_from" in error and "no config.json" in error and "stella_en_1.5B_v5" in error


def test_the_papers_student_plans_from_its_shipped_shape():
    stella = shapes.named_shape("/models/stella_en_1.5B_v5/")
    assert stella["model_type"] == "qwen2" and stella["hidden_size"] == 1536 and stella["num_hidden_layers"] == 28
    assert shapes.named_shape("no_such_model") is None
    assert json.loads((shapes.SHAPES_DIR / "stella_en_1.5B_v5.json").read_text()) == stella


def test_auto_mesh_candidates_go_from_data_parallel_to_full_fsdp():
    from embed_jax.plan import planner

    sizes = [(mesh["data"], mesh["fsdp"]) for mesh in planner.mesh_candidates(16, 128)]
    assert sizes == [(16, 1), (8, 2), (4, 4), (2, 8), (1, 16)]
    assert planner.mesh_candidates(16, 8) == []  # 8 sequences cannot split over 16 chips


def test_auto_mesh_refuses_a_batch_the_chips_cannot_share(capsys):
    code, error = run_plan(capsys, SMOKE, "--topology=v5p-32", "--mesh=auto")
    assert code == 2 and len(error.splitlines()) == 1
    assert "data.global_batch_size=8 does not divide over the 16 chips" in error


def test_extrapolated_memory_never_falls_below_either_compile():
    """XLA's buffer reuse can give a deeper compile fewer temporaries; the line through two such compiles would run
    below zero at full depth, and the plan would then offer a batch of 0."""
    from embed_jax.plan import compiled, planner

    def bucket(layers: int, temporaries: int) -> planner.BucketPlan:
        memory = compiled.Memory(arguments=100 * layers, outputs=10, aliased=10, temporaries=temporaries, code=1)
        analysis = compiled.Analysis(memory, flops=1e9 * layers, optimal_seconds=0.1 * layers, unpriced_calls=0,
                                     step_seconds=0.1 * layers, collectives={kind: compiled.Collective()
                                                                             for kind in compiled.COLLECTIVES},
                                     custom_calls={}, loops=0)
        return planner.BucketPlan(512, analysis, 2e9 * layers, 1.0)

    full = planner._extrapolate_bucket(bucket(3, 5_000), bucket(4, 4_000), (3, 4), 28).analysis
    assert full.memory.temporaries == 5_000  # the line says 5,000 − 25 × 1,000 < 0
    assert full.memory.arguments == 2_800 and full.flops == pytest.approx(28e9)  # what grows per layer still does


def test_a_mesh_that_splits_a_torus_axis_is_built_with_a_warning(caplog):
    """data=2 × fsdp=32 on v5p-128's 4x4x4 torus: neither size is a product of whole torus axes (4, 16, 64), which
    jax.make_mesh refuses with a raw NotImplementedError; the mesh is built by splitting a physical axis instead."""
    from embed_jax.train import sharding

    devices = plan_main.topology_devices(topology.parse_topology("v5p-128"))
    with caplog.at_level("WARNING", logger="embed_jax.train.sharding"):
        mesh = sharding.make_mesh({"data": 2, "fsdp": 32, "tensor": 1}, devices)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 32, "tensor": 1}
    assert sorted(device.id for device in mesh.devices.flat) == sorted(device.id for device in devices)
    assert "a physical axis is split between mesh axes" in caplog.text


def test_the_plan_table_shows_the_tensor_axis_where_it_splits():
    import kit

    mesh_text = kit.load_script("plan_table").mesh_text
    assert mesh_text({"data": 1, "fsdp": 8, "tensor": 1}) == "1×8"
    assert mesh_text({"data": 1, "fsdp": 16, "tensor": 4}) == "1×16×4"
