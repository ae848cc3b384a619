# syntax=docker/dockerfile:1
#
# One image for all four services; each Kubernetes Deployment picks its binary
# with `command:` (see k8s/). `paytrack` (the CLI) runs the layout Job.
#
#   docker build -t ghcr.io/paytrack/paytrack:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are build caches, so the binaries are
# copied out of target/ inside the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p paytrack-ingest \
        -p paytrack-reconciler \
        -p paytrack-ledger-projector \
        -p paytrack-ws-edge \
        -p paytrack-simulator \
        -p paytrack \
    && mkdir -p /out \
    && cp target/release/paytrack-ingest \
          target/release/paytrack-reconciler \
          target/release/paytrack-ledger-projector \
          target/release/paytrack-ws-edge \
          target/release/paytrack-simulator \
          target/release/paytrack \
          /out/

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="paytrack" \
      org.opencontainers.image.description="Real-time payment status tracking: ingest, reconciler, ledger-projector, ws-edge" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 paytrack \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin paytrack
COPY --from=build /out/ /usr/local/bin/
# Numeric, so Kubernetes can check runAsNonRoot without resolving a name.
USER 10001:10001
# ingest, ws-edge, admin (health and metrics)
EXPOSE 8080 8081 9090
CMD ["/usr/local/bin/paytrack-ingest"]
