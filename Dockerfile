# sendguard — a plain, reviewable image: slim Python, non-root, healthcheck on /healthz.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/sendguard
COPY pyproject.toml README.md ./
COPY sendguard ./sendguard
COPY plugins ./plugins
COPY config ./config
RUN pip install . && useradd --system --home-dir /var/lib/sendguard --create-home sendguard

# State (SQLite, outbox, generated API token) lives under the working directory's var/.
WORKDIR /var/lib/sendguard
USER sendguard
EXPOSE 2525 8025

# Inside a container the listeners bind all interfaces (config/examples/docker.yaml);
# mount your own config over it.
COPY --chown=sendguard:sendguard config/examples/docker.yaml /etc/sendguard/sendguard.yaml
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8025/healthz', timeout=2).status == 200 else 1)"

CMD ["sendguard", "serve", "--config", "/etc/sendguard/sendguard.yaml"]
