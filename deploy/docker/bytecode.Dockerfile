# A bpfman bytecode image of the exec-counter BPF object (one layer holding
# the .o, with the io.ebpf.* labels), for examples/k8s/exec-counter-oci.yaml.
#
# From the repository root, after `cargo xtask build`:
#   docker build -f deploy/docker/bytecode.Dockerfile -t localhost:5001/exec-counter-bytecode:0.1.0 target/plugins
FROM scratch
COPY exec_counter.bpf.o /
LABEL io.ebpf.programs='{"handle_exec":"tracepoint"}' \
      io.ebpf.maps='{"events":"ringbuf","events_lost":"per_cpu_array"}'
