"""Drive the daemon's node API with Python's grpcio, as a user would.

usage: grpc_client.py PROTO_DIR SOCKET AUTHORITY NAME COMPONENT

AUTHORITY is `default` (grpcio's own choice, no channel options) or the
value to send as `:authority` (grpc.default_authority). Calls List, Load
(the `steady` test component as NAME), Get and Unload, and prints one JSON
object with what each returned. Stubs are generated from the proto with
grpcio-tools, so they always match it.
"""

import importlib
import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc


def stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="conductor-py-stubs-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "conductor/v1/conductor.proto",
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed ({rc}) for {proto_dir}")
    sys.path.insert(0, out)
    pb = importlib.import_module("conductor.v1.conductor_pb2")
    rpc = importlib.import_module("conductor.v1.conductor_pb2_grpc")
    return pb, rpc


def main():
    proto_dir, socket, authority, name, component = sys.argv[1:6]
    pb, rpc = stubs(proto_dir)
    options = [] if authority == "default" else [("grpc.default_authority", authority)]
    result = {"grpcio": grpc.__version__}
    with grpc.insecure_channel("unix:" + socket, options=options) as channel:
        stub = rpc.ConductorStub(channel)
        before = stub.List(pb.ListRequest(), timeout=30)
        result["list_before"] = [p.name for p in before.plugins]
        spec = pb.PluginSpec(name=name, component=component, config={"greeting": "from python"})
        loaded = stub.Load(pb.LoadRequest(spec=spec), timeout=60)
        result["load"] = {"name": loaded.status.name, "generation": loaded.status.generation}
        got = stub.Get(pb.GetRequest(name=name), timeout=30)
        result["get"] = {
            "name": got.status.name,
            "phase": pb.Phase.Name(got.status.phase),
            "digest": got.status.component_digest,
        }
        after = stub.List(pb.ListRequest(), timeout=30)
        result["list_after"] = [p.name for p in after.plugins]
        try:
            stub.Get(pb.GetRequest(name=name + "-missing"), timeout=30)
            result["get_missing"] = "OK"
        except grpc.RpcError as e:
            result["get_missing"] = e.code().name
        stub.Unload(pb.UnloadRequest(name=name), timeout=60)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
