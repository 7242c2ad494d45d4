"""The one exception type conversion and quantization raise."""

from __future__ import annotations


class ConvertError(ValueError):
    """The input cannot be converted or quantized: unsupported, malformed or hostile.

    A ``ValueError`` so callers can map it to a 400 without knowing this module; messages name files relative to
    the model directory and never carry an absolute path.
    """
