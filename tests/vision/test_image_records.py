"""Image–caption records: round trip (raw arrays and PNG bytes), the prompt's placeholder ids, and every bad input
named by its record."""
import io

import numpy as np
import pytest
from PIL import Image

from embed_jax.data import digits, image_records, records
from embed_jax.data.image_prompt import image_prompt_tokens
from embed_jax.data.records import RecordsError
from embed_jax.teachers import caption_targets, records_folder

HEADS = [image_records.CaptionHead("dense_6", 6), image_records.CaptionHead("dense_2", 2)]
SOURCE = {"path": "test", "pooling": "mean", "max_seq_length": 16, "weights_sha256": "none"}


def draft(shard_size=4):
    return image_records.draft_manifest(HEADS, text_source=SOURCE, corpus=digits.describe("held_out"),
                                        dtype="float32", shard_size=shard_size)


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def rows(count=6):
    items = list(digits.captioned_images("held_out"))[:count]
    rng = np.random.default_rng(0)
    return [(item.id, item.caption, item.image, rng.normal(size=8).astype(np.float32)) for item in items]


def test_round_trip_raw_and_png(tmp_path):
    data = rows()
    data[2] = (data[2][0], data[2][1], png_bytes(data[2][2]), data[2][3])
    manifest = caption_targets.write_image_records(tmp_path / "r", data, draft())
    assert manifest.num_records == 6 and len(manifest.shards) == 2
    assert image_records.head_slices(manifest) == {"dense_6": slice(0, 6), "dense_2": slice(6, 8)}
    source = image_records.ImageRecordSource(tmp_path / "r")
    for index, (record_id, caption, _, vector) in enumerate(data):
        record = source[index]
        assert (record["id"], record["caption"]) == (record_id, caption)
        np.testing.assert_array_equal(record["image"], rows()[index][2])  # PNG is lossless
        np.testing.assert_array_equal(record["teacher"], vector)
    # Written again: the same export, complete, is left as it is.
    assert caption_targets.write_image_records(tmp_path / "r", data, draft()) == manifest


def test_placeholder_ids_equal_hugging_face_add_special_tokens(tiny_text_folder):
    from transformers import AutoTokenizer

    from embed_jax.models import image_tokens

    prompt = image_prompt_tokens(str(tiny_text_folder), 4)
    tokenizer = AutoTokenizer.from_pretrained(tiny_text_folder)
    assert vars(image_tokens.add_image_placeholders(tokenizer)) == prompt.placeholders
    assert tokenizer(image_tokens.image_prompt(4))["input_ids"] == prompt.input_ids.tolist()


def export_error(tmp_path, bad_row):
    data = rows()
    data[3] = bad_row(data[3])
    with pytest.raises(RecordsError) as error:
        caption_targets.write_image_records(tmp_path / "r", data, draft())
    assert repr(data[3][0]) in str(error.value) or data[3][0] in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("bad_row, message", [
    (lambda row: (row[0], row[1], png_bytes(row[2])[:40] + b"\0" * 30, row[3]), "not a readable PNG/JPEG"),
    (lambda row: (row[0], row[1], b"not an image at all", row[3]), "not a readable PNG/JPEG"),
    (lambda row: (row[0], row[1], row[2].astype(np.float32), row[3]), "dtype is float32, expected uint8"),
    (lambda row: (row[0], row[1], np.zeros((8, 8, 4), np.uint8), row[3]), "4 channels"),
    (lambda row: (row[0], row[1], np.zeros((2, 8, 8, 3), np.uint8), row[3]), "is not (height, width)"),
    (lambda row: (row[0], row[1], None, row[3]), "has no image"),
    (lambda row: (row[0], row[1], b"", row[3]), "0 bytes"),
    (lambda row: (row[0], row[1], row[2], row[3][:5]), "caption vector has shape (5,)"),
])
def test_bad_rows_are_refused_at_export_naming_the_record(tmp_path, bad_row, message):
    assert message in export_error(tmp_path, bad_row)


def test_corrupt_bytes_in_a_shard_are_named_at_read(tmp_path):
    good = image_records.encode_image_record("digits-0007/t1", "seven", png_bytes(rows()[0][2]),
                                             np.ones(8, np.float32), "float32")
    start = good.index(b"\x89PNG")
    damaged = good[:start + 20] + bytes(40) + good[start + 60:]
    with pytest.raises(RecordsError, match="'digits-0007/t1'.*not a readable PNG"):
        image_records.decode_image_record(damaged)
    with pytest.raises(RecordsError, match="'digits-0007/t1'.*shard is damaged"):
        image_records.decode_image_record(good[:-3])


def test_a_record_of_another_vector_length_is_named_at_read(tmp_path):
    folder = tmp_path / "r"
    manifest = draft(shard_size=10)
    records_folder.prepare_output_folder(folder, manifest)
    data = rows(2)
    data[1] = (data[1][0], data[1][1], data[1][2], np.ones(5, np.float32))  # bypasses the writer's check
    info = records.write_shard(folder, 0, data, manifest, "hash", encode=image_records.encode_image_record)
    records_folder.finish_output_folder(folder, records.dataclasses.replace(
        manifest, status=records.STATUS_COMPLETE, num_records=2, shards=(info,)))
    source = image_records.ImageRecordSource(folder)
    with pytest.raises(RecordsError, match=f"{data[1][0]!r}: its caption vector has 5 values"):
        source[1]


def test_text_records_are_refused_by_kind(tmp_path):
    text_manifest = records.Manifest(schema_version=1, export_id="x", status=records.STATUS_COMPLETE, teachers=(),
                                     teacher_dim=4, dtype="float32", normalisation="n", corpus={"kind": "builtin"},
                                     shard_size=1, num_records=0)
    (tmp_path / "manifest.json").write_text(text_manifest.to_json())
    with pytest.raises(RecordsError, match="not image–caption records"):
        image_records.ImageRecordSource(tmp_path)


def test_heads_that_differ_from_the_student_are_named(tmp_path):
    manifest = draft()
    with pytest.raises(RecordsError, match=r"data.image_records_dir.*dense_6 \(6-d\), dense_2 \(2-d\).*dense_24"):
        image_records.check_heads_for_training(manifest, (24, 8), records_key="data.image_records_dir")
    image_records.check_heads_for_training(manifest, (6, 2), records_key="data.image_records_dir")


def test_duplicate_ids_are_named(tmp_path):
    data = rows(3)
    data[2] = (data[0][0],) + data[2][1:]
    with pytest.raises(RecordsError, match=f"{data[0][0]!r}: appears twice"):
        caption_targets.write_image_records(tmp_path / "r", data, draft())
