# One image for the API server and the workers (trials run inside the worker's container).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tuner ./tuner
COPY api ./api
COPY migrations ./migrations
COPY examples ./examples
COPY trainers.yaml ./
RUN pip install --no-cache-dir -e '.[tf]'
ENV TUNER_TRAINERS_FILE=/app/trainers.yaml \
    TUNER_ARTIFACT_ROOT=/artifacts
EXPOSE 8000
CMD ["tuner", "serve", "--host", "0.0.0.0", "--port", "8000", "--slots", "0"]
