# Reasoning Studio web app: `reason ui` on 0.0.0.0:7860 with the bundled default model; state in /data.
#   CPU:  docker build -t reason-studio .
#   GPU:  docker build -t reason-studio:gpu --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu22.04 --build-arg VARIANT=gpu .
#   run:  docker run -p 7860:7860 -v reason-data:/data reason-studio      (add --gpus all for the GPU image)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG VARIANT=cpu

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False REASON_HOME=/data

# build-essential + cmake: llama-cpp-python (a dependency) builds from source. CUDA images lack Python 3.11.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && if ! command -v python3.11 >/dev/null; then \
         apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev; fi \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from the CPU index for the CPU image (PyPI's default wheel carries CUDA libraries).
RUN if [ "$VARIANT" = "gpu" ]; then pip install "torch==2.13.0"; \
    else pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu; fi

WORKDIR /opt/reason-studio
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY prompts ./prompts
COPY app ./app
# Portable llama.cpp build: no -march=native, which would bake in the build machine's CPU.
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python==0.3.36" \
    && if [ "$VARIANT" = "gpu" ]; then pip install ".[gpu]"; else pip install .; fi

VOLUME /data
EXPOSE 7860
CMD ["reason", "ui", "--host", "0.0.0.0", "--port", "7860"]
