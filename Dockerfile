# The gateway: admin, management API and inference routes on one port, served by uvicorn
# through `manage.py serve` (which refuses WORKERS > 1 without REDIS_URL: in the embedded
# mode each worker would count limits of its own). docker-compose.yml sets both.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GATEWAY_STATE_DIR=/data \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --create-home --uid 10001 gateway \
    && mkdir -p /data && chown gateway:gateway /data
USER gateway

EXPOSE 8000
VOLUME ["/data"]
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py ensure_admin && exec python manage.py serve --host \"$HOST\" --port \"$PORT\" --workers \"${WORKERS:-1}\""]
