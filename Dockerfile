# The gateway: admin, management API and (later) inference routes, served by uvicorn.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GATEWAY_STATE_DIR=/data \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
# gcc for the compiled build of the request-time modules (gateway/compiled.py)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# (not through manage.py: Django's settings would create the state directory's secrets here)
RUN python -c "import sys; from gateway.compiled import run; sys.exit(run('build'))"
RUN useradd --create-home --uid 10001 gateway \
    && mkdir -p /data && chown gateway:gateway /data
USER gateway

EXPOSE 8000
VOLUME ["/data"]
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py ensure_admin && exec uvicorn gateway.asgi:application --host \"$HOST\" --port \"$PORT\" --workers \"${WORKERS:-2}\" --lifespan on --timeout-graceful-shutdown 30"]
