# syntax=docker/dockerfile:1
# Gatehouse (the tokio binary `gatehouse`) in a small image: built in a Rust image, run on
# distroless (glibc, CA certificates, no shell), as a non-root user, with a health check on
# /healthz that needs no curl (`gatehouse healthcheck`).
#
#   docker build -t gatehouse .
#   docker run --rm -e DISCORD_TOKEN=... -e AMQP_URL=... -e REDIS_URL=... -p 9090:9090 gatehouse
#
# Without DISCORD_TOKEN it runs the demo (a mock gateway in-process); see compose.yaml.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p runtime-tokio --bin gatehouse \
    && install -D -m 0755 target/release/gatehouse /out/gatehouse

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
# The status page, /metrics, /healthz and /readyz.
ENV GATEHOUSE_METRICS_ADDRESS=0.0.0.0:9090 \
    GATEHOUSE_LOG_FORMAT=json
EXPOSE 9090
# distroless's `nonroot` user, by number.
USER 65532:65532
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/gatehouse", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["run"]
