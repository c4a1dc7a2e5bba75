# MLflow tracking server image: the official image plus the PostgreSQL driver
# it lacks (needed for --backend-store-uri postgresql+psycopg2://...).
# Keep the MLflow tag in step with the client version the workers install.
FROM ghcr.io/mlflow/mlflow:v3.17.2

RUN pip install --no-cache-dir psycopg2-binary==2.9.13

# Unprivileged runtime user. /mlartifacts is created here, owned by it, so the
# mlartifacts named volume starts with that owner on its first use.
RUN useradd --create-home --uid 10002 --shell /usr/sbin/nologin mlflow \
 && mkdir -p /mlartifacts \
 && chown mlflow:mlflow /mlartifacts
USER mlflow

EXPOSE 5000
# docker-compose.yml supplies the full `mlflow server ...` command.
ENTRYPOINT []
CMD ["mlflow", "server", "--help"]
