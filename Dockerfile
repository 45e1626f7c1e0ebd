# syntax=docker/dockerfile:1
#
# corral: one image holding both binaries, corral-ingress and corral-worker.
#
# One image rather than two: both are built from one workspace in one cargo
# invocation (one compile of the shared dependencies), they must run the same
# version of the AMQP/envelope contract they share, and the operator commands
# (`corral-worker migrate`, `dead-letters`, `quarantine`) run from the same
# image as the services. Each Deployment picks its binary with `command`; the
# default below is the ingress.
#
#   docker build -t corral:dev .
#   docker run --rm corral:dev corral-worker --help
#
# Stages: chef (cargo-chef installed once) -> planner (a recipe of the
# workspace's dependencies, computed from the manifests) -> builder (the
# dependencies compiled from the recipe: this layer is reused until Cargo.toml
# or Cargo.lock change; then the sources and the release build) -> runtime
# (distroless, glibc only, non-root, no shell).
#
# `deploy/check.sh` checks that the `cargo build` line below builds the same
# packages with the same flags as the README's build command.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install --locked cargo-chef --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: cached separately from the project's own sources.
RUN cargo chef cook --release --locked -p corral-ingress -p corral-worker --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p corral-ingress -p corral-worker \
 && mkdir -p /out \
 && cp target/release/corral-ingress target/release/corral-worker /out/

# distroless/cc: glibc, libgcc, CA certificates (rustls reads the system
# roots for amqps://) and a `nonroot` user (65532); Debian 12, the same glibc
# as the rust:*-bookworm builder.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="corral" \
      org.opencontainers.image.description="Drop Cowboy delivery-status webhooks into PostgreSQL, exactly once: corral-ingress and corral-worker" \
      org.opencontainers.image.source="https://github.com/corral-rs/corral" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/corral-ingress /usr/local/bin/corral-ingress
COPY --from=builder /out/corral-worker /usr/local/bin/corral-worker
USER 65532:65532
# 8080 webhooks (ingress), 9090 admin (ingress), 9091 admin (worker).
EXPOSE 8080 9090 9091
ENV CORRAL_LOG_FORMAT=json
ENTRYPOINT []
CMD ["/usr/local/bin/corral-ingress"]
