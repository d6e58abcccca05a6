// Drive the daemon's node API with Node's @grpc/grpc-js, as a user would.
//
// usage: node grpc_client.js PROTO_DIR SOCKET AUTHORITY NAME COMPONENT
//
// AUTHORITY is `default` (grpc-js's own choice, no channel options) or the
// value to send as `:authority` (grpc.default_authority). Calls List, Load
// (the `steady` test component as NAME), Get and Unload, and prints one JSON
// object with what each returned. The proto is loaded at run time with
// @grpc/proto-loader.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [protoDir, socket, authority, name, component] = process.argv.slice(2);

const definition = protoLoader.loadSync(path.join(protoDir, "conductor/v1/conductor.proto"), {
  includeDirs: [protoDir],
  enums: String,
  longs: String,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).conductor.v1;
const options = authority === "default" ? {} : { "grpc.default_authority": authority };
const client = new v1.Conductor("unix:" + socket, grpc.credentials.createInsecure(), options);

function call(method, request, seconds) {
  const deadline = new Date(Date.now() + seconds * 1000);
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function main() {
  const result = { grpcJs: require("@grpc/grpc-js/package.json").version };
  const before = await call("List", {}, 30);
  result.list_before = before.plugins.map((p) => p.name);
  const spec = { name, component, config: { greeting: "from node" } };
  const loaded = await call("Load", { spec }, 60);
  result.load = { name: loaded.status.name, generation: Number(loaded.status.generation) };
  const got = await call("Get", { name }, 30);
  result.get = { name: got.status.name, phase: got.status.phase, digest: got.status.componentDigest };
  const after = await call("List", {}, 30);
  result.list_after = after.plugins.map((p) => p.name);
  try {
    await call("Get", { name: name + "-missing" }, 30);
    result.get_missing = "OK";
  } catch (e) {
    result.get_missing = grpc.status[e.code];
  }
  await call("Unload", { name }, 60);
  client.close();
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(`grpc-js call failed: ${e.code} ${e.details || e.message}`);
  process.exit(1);
});
