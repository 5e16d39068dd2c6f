# syntax=docker/dockerfile:1
#
# teamhub: one stateless node per container.
#
#   docker build -t teamhub .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /var/lib/teamhub:uid=10001,gid=10001 \
#     -e TEAMHUB_JWT_SECRET="$(openssl rand -hex 32)" teamhub
#
# The image listens on 0.0.0.0:8080, which the node accepts only with a JWT key
# configured (TEAMHUB_JWT_SECRET, or TEAMHUB_JWT_PUBLIC_KEY + TEAMHUB_JWT_ALG): an
# exposed node never runs in development mode. It writes only below /var/lib/teamhub
# (the SQLite default and the activity-log spill file), so the root file system can be
# read-only with a volume or tmpfs mounted there. docs/deploy.md has the rest.

# Keep in step with the toolchain the project is built and tested with.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out
# of the cache so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p teamhub \
    && cp target/release/teamhub /usr/local/bin/teamhub

FROM debian:bookworm-slim AS runtime
LABEL org.opencontainers.image.title="teamhub" \
      org.opencontainers.image.description="Real-time collaboration hub: WebSocket gateway, presence, history and activity log" \
      org.opencontainers.image.licenses="Apache-2.0"
# curl only for the HEALTHCHECK below; the node itself needs nothing but libc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 teamhub \
    && useradd --system --uid 10001 --gid teamhub --home-dir /var/lib/teamhub --shell /usr/sbin/nologin teamhub \
    && install -d -o teamhub -g teamhub -m 0750 /var/lib/teamhub
COPY --from=builder /usr/local/bin/teamhub /usr/local/bin/teamhub

ENV TEAMHUB_LISTEN=0.0.0.0:8080 \
    TEAMHUB_DATABASE_URL=sqlite:///var/lib/teamhub/teamhub.db \
    TEAMHUB_ACTIVITY_SPILL_PATH=/var/lib/teamhub/activity.spill \
    TEAMHUB_LOG_FORMAT=json
WORKDIR /var/lib/teamhub
VOLUME ["/var/lib/teamhub"]
USER 10001:10001
EXPOSE 8080
# /healthz is 200 while the process runs; readiness (/readyz) is for load balancers.
# Change the port here too if TEAMHUB_LISTEN moves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
# SIGTERM drains: sockets close with 1012, the activity log is flushed, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/teamhub"]
CMD ["serve"]
