"""benchmarks/profile_train_step.py: reading the optimised HLO into op kinds and phases (no model is loaded)."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_train_step.py"
spec = importlib.util.spec_from_file_location("profile_train_step", SCRIPT)
profile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile)

HLO = """
ENTRY %main {
  %ynn_fusion.3 = f32[32,384]{1,0} fusion(%a, %b), kind=kCustom, calls=%c, metadata={op_name="jit(train_step)/jvp()/dot_general"}
  %copy_bitcast_fusion.2 = f32[384,32,64]{0,2,1} fusion(%d), kind=kLoop, calls=%e, metadata={op_name="jit(train_step)/transpose(jvp())/dot_general"}
  %wrapped_scatter.6 = f32[30522,384]{1,0} fusion(%f), kind=kLoop, calls=%g, metadata={op_name="jit(train_step)/transpose(jvp(jit(_take)))/scatter-add"}
  %multiply_add_fusion.290 = f32[30522,384]{1,0} fusion(%h), kind=kLoop, calls=%i, metadata={op_name="jit(train_step)/add"}
  %dot.155 = f32[32,32]{1,0} dot(%j, %k), lhs_contracting_dims={1}, rhs_contracting_dims={1}, operand_precision={highest,highest}, metadata={op_name="jit(train_step)/jvp()/dot_general"}
  ROOT %tuple.1 = (f32[32,384]{1,0}) tuple(%ynn_fusion.3)
}
"""


def test_instructions_get_their_kind_and_phase_from_the_jax_name():
    instructions = profile.hlo_instructions(HLO)
    assert instructions["ynn_fusion.3"] == ("matmul (ynn_fusion)", "forward")
    assert instructions["copy_bitcast_fusion.2"] == ("copy_bitcast_fusion", "backward")
    assert instructions["wrapped_scatter.6"] == ("wrapped_scatter", "backward")
    assert instructions["multiply_add_fusion.290"] == ("multiply_add_fusion", "optimizer+metrics")
    assert instructions["dot.155"] == ("dot", "forward")


def test_op_groups():
    assert profile.op_group("matmul (ynn_fusion)") == profile.op_group("dot") == "matmul"
    assert profile.op_group("copy_bitcast_fusion") == "copy / transpose (layouts)"
    assert profile.op_group("wrapped_scatter") == "gather / scatter / zero-fill"
    assert profile.op_group("multiply_add_fusion") == "elementwise and reduce fusions"


def test_hlo_counts_find_highest_precision_dots():
    counts = profile.hlo_counts(HLO)
    assert counts["dot (any)"] == 1 and counts["dot, HIGHEST precision"] == 1
