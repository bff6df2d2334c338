# Multi-stage build of riskgate: a Rust builder (librdkafka is compiled in), then a slim runtime.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: the binary, its pure core and the harness the benches and examples
# name (Cargo reads every member's manifest). `.dockerignore` keeps `target/` and the rest out.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin riskgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 riskgate
COPY --from=build /src/target/release/riskgate /usr/local/bin/riskgate
COPY rules /etc/riskgate/rules
COPY examples/intents.jsonl /usr/share/riskgate/intents.jsonl
USER riskgate
EXPOSE 9464 9465 9467
# `riskgate probe` answers healthchecks without a shell's /dev/tcp or curl (docker-compose.yml).
HEALTHCHECK --interval=5s --retries=30 CMD ["riskgate", "probe", "http://127.0.0.1:9464/readyz"]
ENTRYPOINT ["riskgate"]
CMD ["run", "--config", "/etc/riskgate/riskgate.toml", "--log-format", "json"]
