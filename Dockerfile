# One image for every Inferno service; compose.yaml picks the service with the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
RUN pip install . && useradd --system --uid 10001 inferno

USER inferno
ENV INFERNO_LOG_FORMAT=json
EXPOSE 8851
CMD ["python", "-m", "inferno.api"]
