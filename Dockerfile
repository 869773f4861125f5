# One image that runs `imagebot run` on port 3000. Configure with an env file: cp .env.example .env, then
# docker run --env-file .env ... (see README, "Docker").
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    IMAGEBOT_DB=/data/imagebot.sqlite3 IMAGEBOT_HTTP_HOST=0.0.0.0 IMAGEBOT_HTTP_PORT=3000

WORKDIR /app
# The locked dependencies first (hash-checked; requirements.lock is compiled from pyproject.toml with the
# postgres extra, see docs/testing.md, Locked installs), then the app itself without resolving anything again.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin imagebot \
    && mkdir -p /data && chown imagebot /data

USER imagebot
VOLUME ["/data"]
EXPOSE 3000
# Ready: the database answers on its own connection and every adapter is connected (/livez: the process answers).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4).status != 200)"
ENTRYPOINT ["imagebot", "run"]
