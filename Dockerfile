# Multi-stage build of riskgate: a Rust builder (librdkafka is compiled in), then a slim runtime.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
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
EXPOSE 9464
ENTRYPOINT ["riskgate"]
CMD ["run", "--config", "/etc/riskgate/riskgate.toml", "--log-format", "json"]
