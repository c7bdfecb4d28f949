# The gateway: admin, management API and (later) inference routes, served by uvicorn.
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
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py ensure_admin && exec uvicorn gateway.asgi:application --host \"$HOST\" --port \"$PORT\" --workers \"${WORKERS:-2}\" --lifespan on --timeout-graceful-shutdown 30"]
