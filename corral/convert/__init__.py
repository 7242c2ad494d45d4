"""Model conversion: Hugging Face safetensors directories -> GGUF, and GGUF requantization.

``convert_directory`` writes a GGUF that llama.cpp's engine loads as it loads llama.cpp's own conversions (pure
Python); ``quantize_gguf`` requantizes an F32/F16/BF16 GGUF to the types Ollama offers, the blocks computed by the
engine's own quantizer (``corral.convert.ggml``). Both raise ``ConvertError`` (a
``ValueError``) for anything they cannot handle, and write their output atomically.
"""

from corral.convert.hf import convert_directory
from corral.convert.quantize import quantize_gguf
from corral.errors import ConvertError

__all__ = ["ConvertError", "convert_directory", "quantize_gguf"]
