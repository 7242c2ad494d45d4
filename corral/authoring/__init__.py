"""Model authoring: ``/api/create`` turns a base model or uploaded files plus Modelfile settings into a model."""

from corral.authoring.pipeline import CreateSpec, Creator
from corral.errors import CreateError

__all__ = ["CreateError", "CreateSpec", "Creator"]
