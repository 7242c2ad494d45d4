"""Engines: the llama.cpp builds a runner can run on.

The default engine is the prebuilt ``xllamacpp`` wheel (a generic CPU build). ``corral engine build`` compiles
llama.cpp's own ``llama-server`` from the same source the pinned wheel carries, for this machine's CPU (and a GPU
backend or RPC when asked), and caches it under ``CORRAL_HOME/engines/``; the server then picks the best engine
present (:mod:`corral.engines.select`). ``corral worker`` runs llama.cpp's ``rpc-server`` from a build with RPC, so
a model's layers can be split over several machines (:mod:`corral.engines.rpc`).

- :mod:`.catalog`  the engines on disk: names, variants, what each was built with
- :mod:`.build`    the build: source from the wheel's sdist, cmake and ninja, progress, the install
- :mod:`.select`   which engine serves: ``CORRAL_ENGINE``, ``CORRAL_LLAMA_SERVER``, else the best one present
- :mod:`.gpu`      GPU detection and how many layers to offload for the free VRAM (Ollama's rule)
- :mod:`.rpc`      RPC workers: ``CORRAL_RPC_SERVERS``, reachability, the layer split
"""
