# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim Debian image as
# an unprivileged user.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin errata \
 && cp target/release/errata /usr/local/bin/errata

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/errata --create-home errata \
 && install -d -o errata -g errata /var/lib/errata/metrics
COPY --from=build /usr/local/bin/errata /usr/local/bin/errata
USER errata
WORKDIR /var/lib/errata
ENV ERRATA_BIND=0.0.0.0:8000 \
    ERRATA_DATA_DIR=/var/lib/errata/data \
    RUST_LOG=info
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
ENTRYPOINT ["errata"]
CMD ["serve"]
