"""configs/jasper_teachers.py: the paper's teacher export settings reach the export as written (no model here)."""
import kit
import pytest

from embed_jax.teachers import encoders, export


def jasper_teachers(arg: str = ""):
    return kit.load_config_file("jasper_teachers", arg)


def test_settings_are_the_papers_teachers():
    settings = export.settings_from_config(jasper_teachers())
    nv_embed, stella = settings.teacher_specs
    assert (nv_embed.name, stella.name) == ("nv_embed", "stella")
    assert nv_embed.trust_remote_code and stella.trust_remote_code
    assert nv_embed.append_eos and not stella.append_eos
    assert stella.dense_head == "2_Dense_8192" and stella.prompt_name == "" and nv_embed.prompt == ""
    assert {spec.dtype for spec in settings.teacher_specs} == {"bfloat16"}
    assert {spec.device for spec in settings.teacher_specs} == {"auto"}
    assert {spec.max_seq_length for spec in settings.teacher_specs} == {512}
    assert settings.storage_dtype == "float16" and not settings.dry_run
    assert export.settings_from_config(jasper_teachers("smoke")).dry_run


def test_placeholder_paths_say_which_key_to_set():
    spec = export.settings_from_config(jasper_teachers()).teacher_specs[0]
    with pytest.raises(encoders.TeacherConfigError, match=r"teachers.nv_embed.path='/path/to/NV-Embed-v2': .* is "
                                                          r"not a folder"):
        encoders.load_teacher(spec)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match=r"configs/jasper_teachers.py:big: unknown word\(s\) \[.big.\]; use a comma-separated subset of \[.smoke.\]"):
        jasper_teachers("big")
