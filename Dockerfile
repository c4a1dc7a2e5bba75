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

# Keep the CUDA torch build that ships with the base image: the constraint
# stops pip from replacing it with a CPU/other-CUDA wheel from PyPI. It pins
# the installed distribution's version as pip sees it (importlib.metadata),
# not torch.__version__, which can carry a "+cuXXX" suffix that the installed
# metadata lacks (PyPI's wheels) and then matches nothing.
# Dependencies first, from pyproject.toml alone, so that a source change
# rebuilds only the last, small layer.
COPY pyproject.toml ./
RUN python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > /tmp/torch-constraint.txt \
 && python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -c /tmp/torch-constraint.txt -r /tmp/requirements.txt \
 && rm /tmp/torch-constraint.txt /tmp/requirements.txt

# studies/ is resolved relative to the working directory, so it must live in
# /app next to the package.
COPY README.md ./
COPY hvit_sweeps/ ./hvit_sweeps/
COPY studies/ ./studies/
RUN pip install --no-cache-dir --no-deps .

# Unprivileged runtime user; /app stays writable for checkpoints/ and mlruns/,
# ./data is mounted read-only at /app/data by docker-compose.yml.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin hvit \
 && mkdir -p /app/data /app/checkpoints \
 && chown -R hvit:hvit /app
USER hvit

CMD ["hvit-sweep", "--help"]
