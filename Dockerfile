# contactgate: the gateway with its embedded SQLite store, serving on port 8080.
#   docker build -t contactgate .
#   docker run --rm -p 8080:8080 contactgate
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN groupadd --system --gid 10001 contactgate \
 && useradd --system --uid 10001 --gid contactgate --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin contactgate

WORKDIR /app

# Dependencies and code first, so editing config.yaml or the FAQ does not redo the install.
# README.md* : pyproject's readme, copied when present (a glob may match nothing).
# New top-level packages listed in pyproject.toml need a COPY line here too.
COPY pyproject.toml README.md* ./
COPY gateway/ ./gateway/
COPY adapters/ ./adapters/
COPY routing/ ./routing/
RUN pip install --no-cache-dir '.[fast]' \
 && rm -rf build *.egg-info

COPY config.yaml ./
COPY faq/ ./faq/

# The app user may create files (the SQLite database) in /app, but not change the code or config.
RUN chown contactgate:contactgate /app

USER contactgate
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

CMD ["contactgate", "serve", "--config", "/app/config.yaml", "--host", "0.0.0.0"]
