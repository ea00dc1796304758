"""The image path of an exported student: a Hugging Face `SiglipVisionModel` folder plus what joins it to the text path.

`export_vision(student, folder)` adds to an exported model folder (embed_jax/convert/hf.py writes the text path and
calls this when the student has a vision tower):

    vision_tower/config.json, model.safetensors   the tower, a standard SiglipVisionModel (the reverse of
                                                  embed_jax/models/tables/siglip.py)
    vision_tower/preprocessor_config.json         SiglipImageProcessor settings at the tower's resolution
    vision_extras.safetensors                     what is neither tower nor text encoder: the pool's projection
                                                  ("projection.weight" (out, in), "projection.bias") in linear mode, and
                                                  the placeholder rows past the encoder's vocabulary ("added_embeddings",
                                                  ids vocab_size … ), when the tokenizer had to add them
    vision.json                                   the pool (mode, num_tokens, widths), the placeholder tokens and ids,
                                                  the image prompt, and the files above

The returned dict is vision.json's content (the "vision" entry of embed_jax_export.json).

`encode_images(folder, images, head=dim)` encodes images from such a folder with torch and transformers only, as the
Flax student does: SiglipImageProcessor → SiglipVisionModel.last_hidden_state → the projection pool (torch's
AdaptiveAvgPool2d for Jasper's parameter-free pool; token average + Linear in linear mode) → the image tokens written
over the `<img_token>` placeholders of `<img_start>` N×`<img_token>` `<img_end>` (tokenised by the folder's tokenizer,
placeholders added) in the text encoder's input embeddings → the encoder (`inputs_embeds`) → the folder's pooling →
the head `2_Dense_{dim}` → L2 normalisation. Parity with Flax: tests/vision/test_hf_vision.py (cosine ≥ 0.9999).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embed_jax.convert.hf_export import read_head
from embed_jax.models import param_paths
from embed_jax.models.image_tokens import IMAGE_END, IMAGE_START, IMAGE_TOKEN, add_image_placeholders, image_prompt
from embed_jax.models.siglip import ARCHITECTURE_KEYS
from embed_jax.models.tables import compile_rules, flax_target
from embed_jax.models.tables.siglip import TABLE

VISION_FILE = "vision.json"
TOWER_FOLDER = "vision_tower"
EXTRAS_FILE = "vision_extras.safetensors"
FORMAT_VERSION = 1


class VisionExportError(ValueError):
    """The image path cannot be written or read; the message names the part and what to do."""


# ---------------------------------------------------------------------------------------------------- export


def tower_tensors(student: Any) -> dict[str, np.ndarray]:
    """The Flax tower's parameters under Hugging Face SiglipVisionModel names (fp32), by the siglip name table.
    Every tensor of the Hugging Face model must be filled and every tower parameter used, else the error lists all."""
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel

    params = param_paths.flat_params(student.vision, separator=".", dtype=np.float32)
    config = SiglipVisionConfig(**tower_config(student))
    with torch.device("meta"):
        reference = SiglipVisionModel(config)
    rules = compile_rules(TABLE)
    tensors, problems, used = {}, [], set()
    for name, tensor in reference.state_dict().items():
        bare = name.removeprefix("vision_model.")
        target = flax_target(rules, bare)
        if target is None:
            problems.append(f"{name}: no rule of the siglip table")
            continue
        path, transform = target
        if path not in params:
            problems.append(f"{name} → {path}: the Flax tower has no such parameter")
            continue
        array = transform.to_hf(params[path], tuple(tensor.shape))
        if tuple(array.shape) != tuple(tensor.shape):
            problems.append(f"{name}: {array.shape} vs Hugging Face's {tuple(tensor.shape)}")
            continue
        tensors[name] = np.ascontiguousarray(array)
        used.add(path)
    problems += [f"{path}: no Hugging Face tensor takes it" for path in sorted(set(params) - used)]
    if problems:
        raise VisionExportError("the vision tower does not map onto SiglipVisionModel:\n  " + "\n  ".join(problems))
    return tensors


def tower_config(student: Any) -> dict[str, Any]:
    """SiglipVisionConfig keyword arguments of the student's tower (architecture keys only)."""
    return {key: getattr(student.vision.config, key) for key in ARCHITECTURE_KEYS}


def extras_tensors(student: Any) -> dict[str, np.ndarray]:
    extras = {}
    if student.projection_pool.mode == "linear":
        projection = student.projection_pool.projection
        extras["projection.weight"] = np.ascontiguousarray(np.asarray(projection.kernel[...], np.float32).T)
        extras["projection.bias"] = np.asarray(projection.bias[...], np.float32)
    if student.added_embeddings is not None:
        extras["added_embeddings"] = np.asarray(student.added_embeddings.embedding[...], np.float32)
    return extras


def export_vision(student: Any, folder: str | Path) -> dict[str, Any]:
    """Write the image path into an exported folder (module docstring); returns vision.json's content."""
    from safetensors.numpy import save_file
    from transformers import SiglipImageProcessor, SiglipVisionConfig

    if student.vision is None:
        raise VisionExportError("this student has no vision tower: there is no image path to export")
    folder = Path(folder)
    tower_folder = folder / TOWER_FOLDER
    tower_folder.mkdir(parents=True, exist_ok=True)
    config = tower_config(student)
    SiglipVisionConfig(**config).save_pretrained(str(tower_folder))
    save_file(tower_tensors(student), str(tower_folder / "model.safetensors"), metadata={"format": "pt"})
    size = int(config["image_size"])
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(str(tower_folder))
    extras = extras_tensors(student)
    if extras:
        save_file(extras, str(folder / EXTRAS_FILE), metadata={"format": "pt"})
    pool = student.projection_pool
    description = {
        "format_version": FORMAT_VERSION,
        "tower": TOWER_FOLDER,
        "image_size": size,
        "pool": {"mode": pool.mode, "num_tokens": int(pool.num_tokens), "in_features": int(pool.in_features),
                 "out_features": int(pool.out_features)},
        "placeholders": {"tokens": {"start": IMAGE_START, "token": IMAGE_TOKEN, "end": IMAGE_END},
                         "ids": {key: int(value) for key, value in vars(student.placeholders).items()}},
        "prompt": image_prompt(int(pool.num_tokens)),
        "extras": EXTRAS_FILE if extras else None,
        "added_embeddings_first_id": int(student.vocab_size) if "added_embeddings" in extras else None,
        "pooling": student.pooling_method,
    }
    (folder / VISION_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return description


# ---------------------------------------------------------------------------------------------------- encode


def read_vision(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / VISION_FILE
    if not path.is_file():
        raise VisionExportError(f"{path} is missing: {folder} holds no image path (export a stage-4 student)")
    description = json.loads(path.read_text())
    if description.get("format_version") != FORMAT_VERSION:
        raise VisionExportError(f"{path}: format_version {description.get('format_version')!r}, this embed_jax reads "
                                f"{FORMAT_VERSION}")
    return description


class ImageEncoder:
    """An exported folder's image path in PyTorch (module docstring); `encode(images, head)` → (n, head) unit rows."""

    def __init__(self, folder: str | Path):
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer, SiglipImageProcessor, SiglipVisionModel

        self.folder = Path(folder)
        self.vision = read_vision(self.folder)
        self.processor = SiglipImageProcessor.from_pretrained(str(self.folder / self.vision["tower"]))
        self.tower = SiglipVisionModel.from_pretrained(str(self.folder / self.vision["tower"])).eval()
        self.text_encoder = AutoModel.from_pretrained(str(self.folder)).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        ids = vars(add_image_placeholders(self.tokenizer))
        if ids != self.vision["placeholders"]["ids"]:
            raise VisionExportError(f"{self.folder}: its tokenizer gives placeholder ids {ids}, {VISION_FILE} records "
                                    f"{self.vision['placeholders']['ids']}: the tokenizer is not the student's")
        self.extras = load_file(str(self.folder / self.vision["extras"])) if self.vision["extras"] else {}
        self._read_head = lambda dim: read_head(self.folder, dim, self.text_encoder.config.hidden_size)
        self._torch = torch

    def image_tokens(self, pixel_values):
        """(B, 3, S, S) → (B, num_tokens, text width), as embed_jax.models.projection_pool."""
        torch = self._torch
        hidden = self.tower(pixel_values=pixel_values).last_hidden_state
        pool = self.vision["pool"]
        if pool["mode"] == "adaptive_average":
            return torch.nn.AdaptiveAvgPool2d((pool["num_tokens"], pool["out_features"]))(hidden)
        tokens = torch.nn.AdaptiveAvgPool1d(pool["num_tokens"])(hidden.transpose(1, 2)).transpose(1, 2)
        return torch.nn.functional.linear(tokens, self.extras["projection.weight"], self.extras["projection.bias"])

    def input_embeddings(self, input_ids):
        """Word embeddings of the prompt, placeholder ids past the vocabulary from the exported extra rows."""
        torch = self._torch
        table = self.text_encoder.get_input_embeddings()
        vocab = table.num_embeddings
        embedded = table(input_ids.clamp(max=vocab - 1))
        if "added_embeddings" in self.extras:
            added = self.extras["added_embeddings"]
            rows = added[(input_ids - vocab).clamp(0, added.shape[0] - 1)]
            embedded = torch.where((input_ids >= vocab)[..., None], rows, embedded)
        return embedded

    def encode(self, images: Sequence[Any], head: int) -> np.ndarray:
        """Images (PIL images, or uint8 (h, w[, c]) arrays) → (n, head) float32 unit vectors."""
        torch = self._torch
        from PIL import Image

        pictures = [image if isinstance(image, Image.Image) else _pil(np.asarray(image)) for image in images]
        pixel_values = self.processor(images=pictures, return_tensors="pt")["pixel_values"]
        kernel, bias = self._read_head(head)
        with torch.no_grad():
            tokens = self.image_tokens(pixel_values)
            prompt = self.tokenizer(self.vision["prompt"], return_tensors="pt")["input_ids"]
            input_ids = prompt.expand(len(pictures), -1)
            embedded = self.input_embeddings(input_ids)
            is_image = input_ids == self.vision["placeholders"]["ids"]["token_id"]
            embedded = embedded.clone()
            embedded[is_image] = tokens.reshape(-1, tokens.shape[-1]).to(embedded.dtype)
            mask = torch.ones_like(input_ids)
            hidden = self.text_encoder(inputs_embeds=embedded, attention_mask=mask).last_hidden_state
            pooled = _pool(hidden, mask, self.vision["pooling"])
            vectors = pooled @ torch.from_numpy(kernel) + torch.from_numpy(bias)
            return torch.nn.functional.normalize(vectors, dim=-1).numpy()


def _pil(array: np.ndarray):
    from PIL import Image

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB")


def _pool(hidden, mask, method: str):
    if method == "mean":
        weights = mask[..., None].to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if method in ("cls", "first"):
        return hidden[:, 0]
    if method == "last":
        return hidden[:, -1]  # the image prompt row has no padding
    raise VisionExportError(f"pooling {method!r} is not one of mean, cls, first, last")


def encode_images(folder: str | Path, images: Sequence[Any], *, head: int) -> np.ndarray:
    """Images → (n, head) unit vectors in the exported student's space (ImageEncoder; load once to encode often)."""
    return ImageEncoder(folder).encode(images, head)
