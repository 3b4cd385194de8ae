# sendguard — a plain, reviewable image: slim Python, pinned dependencies, non-root, healthcheck
# on /healthz at the address the config's http.listen names.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/sendguard

# The runtime dependencies exactly as locked (`make lock` regenerates requirements.lock), in a
# layer of their own that changes only with the lock.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# sendguard itself, with no dependency beyond the lock (`pip check` fails the build if the lock
# no longer satisfies pyproject.toml).
COPY pyproject.toml README.md ./
COPY sendguard ./sendguard
COPY plugins ./plugins
COPY config ./config
RUN pip install --no-deps . && pip check \
    && useradd --system --home-dir /var/lib/sendguard --create-home sendguard

# State (SQLite, outbox, generated API token) lives under the working directory's var/.
WORKDIR /var/lib/sendguard
USER sendguard
EXPOSE 2525 8025

# Inside a container the listeners bind all interfaces (config/examples/docker.yaml);
# mount your own config over it. The healthcheck reads the same file, so it follows http.listen.
COPY --chown=sendguard:sendguard config/examples/docker.yaml /etc/sendguard/sendguard.yaml
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sendguard", "healthcheck", "--config", "/etc/sendguard/sendguard.yaml", "--timeout", "3"]

CMD ["sendguard", "serve", "--config", "/etc/sendguard/sendguard.yaml"]
