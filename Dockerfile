# syntax=docker/dockerfile:1
# seekwire gateway image: slim, non-root, generated code included, gRPC health for HEALTHCHECK.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen ./gen
COPY server ./server
COPY client ./client
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin seekwire \
 && mkdir -p /var/lib/seekwire && chown 10001 /var/lib/seekwire
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
# The key store is usually a mounted Secret; it is re-read when it changes.
ENV SEEKWIRE_LISTEN=0.0.0.0:50051 \
    SEEKWIRE_DRAIN_DELAY=10 \
    SEEKWIRE_KEYS_FILE=/var/lib/seekwire/keys.json \
    SEEKWIRE_METRICS_LISTEN=0.0.0.0:9464 \
    PYTHONUNBUFFERED=1
EXPOSE 50051 9464
# Exits 0 only when grpc.health.v1 answers SERVING (NOT_SERVING while draining).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import grpc,sys;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;c=grpc.insecure_channel('127.0.0.1:50051');r=g.HealthStub(c).Check(h.HealthCheckRequest(),timeout=2);sys.exit(r.status!=h.HealthCheckResponse.SERVING)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["seekwire"]
CMD ["serve"]
