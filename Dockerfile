# Multi-stage build of pgveil; the runtime image runs as a non-root user
# and listens on 6432.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin pgveil

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /etc/pgveil pgveil
COPY --from=build /src/target/release/pgveil /usr/local/bin/pgveil
COPY policies /etc/pgveil/policies
USER pgveil
WORKDIR /etc/pgveil
EXPOSE 6432
ENTRYPOINT ["pgveil"]
CMD ["serve", "--config", "/etc/pgveil/pgveil.toml"]
