# Sweep worker image: hvit-sweep on a CUDA-enabled PyTorch base.
#   docker build -t hvit-sweep:0.1.0 .
#   docker run --rm --gpus 1 hvit-sweep:0.1.0 hvit-sweep --help
# The base tag is pinned; bump it deliberately (torch>=2.4 is required).
ARG BASE_IMAGE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# studies/ is resolved relative to the working directory, so it must live in
# /app next to the package.
COPY pyproject.toml README.md ./
COPY hvit_sweeps/ ./hvit_sweeps/
COPY studies/ ./studies/

# Keep the CUDA torch build that ships with the base image: the constraint
# stops pip from replacing it with a CPU/other-CUDA wheel from PyPI.
RUN python -c "import torch; print('torch==' + torch.__version__)" > /tmp/torch-constraint.txt \
 && pip install --no-cache-dir -c /tmp/torch-constraint.txt . \
 && rm /tmp/torch-constraint.txt

# Unprivileged runtime user; /app stays writable for checkpoints/ and mlruns/,
# ./data is mounted read-only at /app/data by docker-compose.yml.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin hvit \
 && mkdir -p /app/data /app/checkpoints \
 && chown -R hvit:hvit /app
USER hvit

CMD ["hvit-sweep", "--help"]
