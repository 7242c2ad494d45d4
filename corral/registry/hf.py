"""Hugging Face names: ``hf.co/<user>/<repo>[:<quant>]`` and ``huggingface.co/...``.

Ollama has no special code for them and neither does Corral's transfer path: the name parses as host ``hf.co``,
namespace ``<user>``, model ``<repo>``, tag ``<quant>`` (``latest`` when left out), the manifest is stored under
``manifests/hf.co/<user>/<repo>/<quant>``, and the pull speaks the same ``/v2/<user>/<repo>/manifests/<quant>``
protocol. Hugging Face builds an Ollama-style manifest on its side: it picks the GGUF file for the quantization
(case-insensitively; ``latest`` means its default, Q4_K_M when the repository has it) and adds template, params and
license layers; blob requests redirect to its CDN, which the pull follows without sending credentials.

What this module adds is what a user needs when that goes wrong: which names are Hugging Face's, and a hint for
the errors that mean "private, gated or absent" rather than a broken transfer.
"""

from __future__ import annotations

from corral.store.names import DEFAULT_TAG, ModelName

HF_HOSTS = frozenset({"hf.co", "huggingface.co"})


def is_hugging_face(name: ModelName) -> bool:
    """Whether ``name`` lives on Hugging Face (either spelling of its host)."""
    return name.host.lower() in HF_HOSTS


def repo_id(name: ModelName) -> str:
    """The Hugging Face repository, ``<user>/<repo>``, as its web pages spell it."""
    return f"{name.namespace}/{name.model}"


def quantization(name: ModelName) -> str | None:
    """The quantization asked for; ``None`` for ``latest``, which leaves the choice to Hugging Face."""
    return None if name.tag.lower() == DEFAULT_TAG else name.tag


def hint(name: ModelName, status: int) -> str:
    """A short explanation to append to a registry error for a Hugging Face name, or ``""``."""
    if not is_hugging_face(name):
        return ""
    if status in (401, 403):
        return (f" ({repo_id(name)} may be private or gated: put a Hugging Face token for {name.host} in "
                "CORRAL_REGISTRY_AUTH or registries.json)")
    if status == 404:
        quant = quantization(name)
        what = f"quantization {quant!r}" if quant else "a GGUF file"
        return f" (check that {repo_id(name)} exists on Hugging Face and has {what})"
    return ""
