# The node host image: `conductor` (run as `conductor serve` by the DaemonSet)
# and the example plugins built by `cargo xtask build`, under
# /usr/share/conductor/plugins (examples/k8s/exec-counter.yaml uses them).
#
# Build from the repository root:
#   docker build -f deploy/docker/conductor.Dockerfile -t ebpfconductor/conductor:dev .
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# rust-toolchain.toml names the toolchain and the wasm32-wasip2 target;
# `cargo xtask build` installs whatever else it misses (apt, as root here).
RUN rustup toolchain install \
 && cargo xtask build \
 && cargo build --release --locked -p conductor-cli --bin conductor \
 && mkdir -p /out/plugins \
 && cp target/release/conductor /out/ \
 && cp target/plugins/*.wasm target/plugins/*.bpf.o /out/plugins/

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/conductor /usr/local/bin/conductor
COPY --from=build /out/plugins/ /usr/share/conductor/plugins/
ENTRYPOINT ["/usr/local/bin/conductor"]
CMD ["serve"]
