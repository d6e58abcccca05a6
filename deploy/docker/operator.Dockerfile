# The operator image: `conductor-operator` (node agent in the DaemonSet,
# cluster controller in its Deployment). Runs as a non-root user.
#
# Build from the repository root:
#   docker build -f deploy/docker/operator.Dockerfile -t ebpfconductor/conductor-operator:dev .
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# rust-toolchain.toml names the toolchain.
RUN rustup toolchain install \
 && cargo build --release --locked -p conductor-operator --bin conductor-operator \
 && cp target/release/conductor-operator /conductor-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /conductor-operator /usr/local/bin/conductor-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/conductor-operator"]
