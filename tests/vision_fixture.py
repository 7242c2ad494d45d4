"""A tiny vision projector for tests: random weights, but a real CLIP encoder graph the engine loads and runs.

No vision model ships in a package the tests can install, so this writes one: a LLaVA-style projector GGUF
(``clip.projector_type = mlp``) whose vision tower is a 32x32-pixel, 8x8-patch ViT with two blocks, and whose MLP
projector maps the tower's width onto the text model's embedding width (read from the text model's own GGUF), so
llama.cpp's mtmd accepts it next to that model. Each image becomes :data:`IMAGE_TOKENS` embeddings in the prompt.

The weights are random but seeded: the same text model gives the same projector bytes every time. They are scaled so
that the image embeddings are about as large as the text model's token embeddings, so different images steer a
greedy answer differently while the same image always gives the same one.

Keys and tensor names follow llama.cpp's ``tools/mtmd/clip-impl.h`` and the loader in ``clip.cpp``; the graph is
``clip_graph_llava`` (``models/llava.cpp``), which runs every block but the last, then the post norm and
``mm.0`` -> GELU -> ``mm.2``.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # one embedding per patch: 16
WIDTH = 64  # the vision tower's embedding width
HEADS = 4
FFN = 128
BLOCKS = 2  # the LLaVA graph stops one block before the last, so one runs
PROJ_HIDDEN = 256


def _text_width(text_model_gguf: str | Path) -> int:
    """The text model's embedding width (``<arch>.embedding_length``)."""
    reader = gguf.GGUFReader(str(text_model_gguf))
    arch_field = reader.get_field("general.architecture")
    if arch_field is None:
        raise ValueError(f"{text_model_gguf}: no general.architecture")
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    width_field = reader.get_field(f"{arch}.embedding_length")
    if width_field is None:
        raise ValueError(f"{text_model_gguf}: no {arch}.embedding_length")
    return int(width_field.parts[width_field.data[0]][0])


def write_projector(path: str | Path, text_model_gguf: str | Path) -> Path:
    """Write a projector GGUF at ``path`` that the engine accepts for ``text_model_gguf``; returns the path."""
    width_out = _text_width(text_model_gguf)
    rng = np.random.default_rng(20260519 + width_out)

    def mat(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def vec(n: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(n) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("general.name", "corral-test-projector")
    writer.add_string("general.description", "random-weight CLIP projector for Corral's vision tests")
    writer.add_uint32("general.file_type", 0)  # F32
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", FFN)
    writer.add_uint32("clip.vision.projection_dim", width_out)
    writer.add_uint32("clip.vision.block_count", BLOCKS)
    writer.add_uint32("clip.vision.attention.head_count", HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)

    n_pos = IMAGE_TOKENS
    # A patch's pixels (3 x 8 x 8, normalized to [-1, 1]) project to WIDTH values of about unit size.
    writer.add_tensor("v.patch_embd.weight", mat(WIDTH, 3 * PATCH_SIZE * PATCH_SIZE, 0.15).reshape(
        WIDTH, 3, PATCH_SIZE, PATCH_SIZE))
    writer.add_tensor("v.patch_embd.bias", vec(WIDTH))
    writer.add_tensor("v.position_embd.weight", mat(n_pos, WIDTH, 0.1))
    attn = 1.0 / np.sqrt(WIDTH)
    for i in range(BLOCKS):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{i}.{name}.weight", mat(WIDTH, WIDTH, attn))
            writer.add_tensor(f"v.blk.{i}.{name}.bias", vec(WIDTH))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{i}.{name}.weight", np.ones(WIDTH, dtype=np.float32))
            writer.add_tensor(f"v.blk.{i}.{name}.bias", np.zeros(WIDTH, dtype=np.float32))
        writer.add_tensor(f"v.blk.{i}.ffn_up.weight", mat(FFN, WIDTH, attn))
        writer.add_tensor(f"v.blk.{i}.ffn_up.bias", vec(FFN))
        writer.add_tensor(f"v.blk.{i}.ffn_down.weight", mat(WIDTH, FFN, 1.0 / np.sqrt(FFN)))
        writer.add_tensor(f"v.blk.{i}.ffn_down.bias", vec(WIDTH))
    writer.add_tensor("v.post_ln.weight", np.ones(WIDTH, dtype=np.float32))
    writer.add_tensor("v.post_ln.bias", np.zeros(WIDTH, dtype=np.float32))
    # The projector: post-norm features (unit variance) -> GELU MLP -> the text model's width, at roughly the scale
    # of a small model's token embeddings.
    writer.add_tensor("mm.0.weight", mat(PROJ_HIDDEN, WIDTH, 1.0 / np.sqrt(WIDTH)))
    writer.add_tensor("mm.0.bias", vec(PROJ_HIDDEN))
    writer.add_tensor("mm.2.weight", mat(width_out, PROJ_HIDDEN, 1.0 / np.sqrt(PROJ_HIDDEN)))
    writer.add_tensor("mm.2.bias", vec(width_out, 0.0))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def png_bytes(width: int, height: int, pixel: object) -> bytes:
    """A PNG (8-bit RGB) whose pixel (x, y) is ``pixel(x, y)`` -> (r, g, b), or one (r, g, b) colour everywhere."""
    import struct
    import zlib

    def colour(x: int, y: int) -> tuple[int, int, int]:
        value = pixel(x, y) if callable(pixel) else pixel
        r, g, b = value  # type: ignore[misc]
        return int(r), int(g), int(b)

    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in colour(x, y)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
