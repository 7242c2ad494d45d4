"""Model authoring: ``/api/create`` turns a base model or uploaded files plus Modelfile settings into a model."""

from corral.authoring.errors import CreateError
from corral.authoring.pipeline import CreateSpec, Creator

__all__ = ["CreateError", "CreateSpec", "Creator"]
