"""The Modelfile: Ollama's recipe format for building a model, read (``parse``) and written (``format_modelfile``).

The CLI reads a Modelfile into an ``/api/create`` request; ``/api/show`` writes one back from a stored model.
"""

from corral.errors import ModelfileError
from corral.modelfile.params import DEPRECATED, PARAMETERS, format_value, parse_value, typed_parameters
from corral.modelfile.parser import COMMANDS, INVALID_COMMAND, ROLES, Command, decode, parse
from corral.modelfile.writer import command_text, format_modelfile, quote

__all__ = [
    "COMMANDS",
    "DEPRECATED",
    "INVALID_COMMAND",
    "PARAMETERS",
    "ROLES",
    "Command",
    "ModelfileError",
    "command_text",
    "decode",
    "format_modelfile",
    "format_value",
    "parse",
    "parse_value",
    "quote",
    "typed_parameters",
]
