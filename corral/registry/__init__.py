"""Registry transfers: pull and push over the OCI distribution protocol, as Ollama does (see docs/registry.md)."""
