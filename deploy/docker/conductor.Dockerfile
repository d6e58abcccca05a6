# The node host image: `conductor` (run as `conductor serve` by the DaemonSet)
# and the example plugins built by `cargo xtask build`, under
# /usr/share/conductor/plugins (examples/k8s/exec-counter.yaml uses them).
#
# Build from the repository root:
#   docker build -f deploy/docker/conductor.Dockerfile -t ebpfconductor/conductor:dev .
# The image also holds bpfman's CLI (for `bytecode.loader: bpfman` and the
# kustomize component deploy/components/bpfman); leave it out with
#   --build-arg BPFMAN_VERSION=
FROM docker.io/library/rust:1.95-bookworm AS build
ARG BPFMAN_VERSION=0.6.0
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
# bpfman's build needs the multiarch include directory (docs/src/bpfman.md).
RUN mkdir -p /out/bpfman/bin \
 && if [ -n "$BPFMAN_VERSION" ]; then \
      C_INCLUDE_PATH=/usr/include/$(gcc -print-multiarch) \
      cargo install --locked bpfman --version "$BPFMAN_VERSION" --root /out/bpfman; \
    fi

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/conductor /usr/local/bin/conductor
COPY --from=build /out/bpfman/bin/ /usr/local/bin/
COPY --from=build /out/plugins/ /usr/share/conductor/plugins/
ENTRYPOINT ["/usr/local/bin/conductor"]
CMD ["serve"]
