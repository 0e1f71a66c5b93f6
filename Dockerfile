# syntax=docker/dockerfile:1
# Multi-stage build: a static (musl) binary in an image that holds nothing else.

FROM rust:1.95-alpine AS build
# musl-dev is the libc of the toolchain's own Alpine release: its version follows the base tag.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ollama-proxy \
    && install -D -m 0755 target/release/ollama-proxy /out/usr/local/bin/ollama-proxy \
    && install -d -m 0750 -o 65534 -g 65534 /out/data

FROM scratch
COPY --from=build /out/ /
# The metadata cache lives on a volume so it survives new containers. A config file for several
# machines (README.md, "Several machines") is mounted in /config, readable by user 65534, and named
# with -e CONFIG=/config/config.toml.
ENV CACHE_FILE=/data/cache.json \
    PORT=11434
VOLUME ["/data"]
USER 65534:65534
EXPOSE 11434
# The image has no curl: the binary checks itself.
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["/usr/local/bin/ollama-proxy", "health"]
ENTRYPOINT ["/usr/local/bin/ollama-proxy"]
CMD ["serve"]
