// Calls the eCERT service from Node.js with @grpc/grpc-js and @grpc/proto-loader, using only the
// .proto files in protos/, and prints what it saw as one JSON object for the Python test to judge.
// Usage: node interop.mjs HOST:PORT
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const protos = path.resolve(here, "../../../protos");
const target = process.argv[2];
if (!target) {
  console.error("usage: node interop.mjs HOST:PORT");
  process.exit(2);
}

const definition = protoLoader.loadSync(
  ["ecert/v1/transmission.proto", "ecert/v1/match.proto", "ecert/v1/quota.proto"],
  { includeDirs: [protos], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const ecert = grpc.loadPackageDefinition(definition).ecert.v1;

// The rich error model (google.rpc.Status and its standard details) is not in protos/: these are its
// published field numbers, declared here so the test depends on nothing but protos/.
const rpcTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } } },
        rpc: {
          nested: {
            Status: { fields: { code: { type: "int32", id: 1 }, message: { type: "string", id: 2 },
                                details: { rule: "repeated", type: "google.protobuf.Any", id: 3 } } },
            ErrorInfo: { fields: { reason: { type: "string", id: 1 }, domain: { type: "string", id: 2 },
                                   metadata: { keyType: "string", type: "string", id: 3 } } },
            BadRequest: {
              fields: { field_violations: { rule: "repeated", type: "FieldViolation", id: 1 } },
              nested: { FieldViolation: { fields: { field: { type: "string", id: 1 }, description: { type: "string", id: 2 },
                                                    reason: { type: "string", id: 3 } } } },
            },
          },
        },
      },
    },
  },
});
// ecert.v1.Receipt, a detail of rejected transmissions, decoded with the type from protos/ itself.
const ecertTypes = new protobuf.Root();
ecertTypes.resolvePath = (_origin, target) => path.join(protos, target);
ecertTypes.loadSync("ecert/v1/transmission.proto", { keepCase: true });
const Receipt = ecertTypes.lookupType("ecert.v1.Receipt");

function richError(error) {
  const out = { code: grpc.status[error.code], message: error.details };
  const raw = error.metadata?.get("grpc-status-details-bin")?.[0];
  if (!raw) return out;
  const status = rpcTypes.lookupType("google.rpc.Status").decode(raw);
  out.status_code = status.code;
  for (const detail of status.details) {
    const name = detail.type_url.split("/").pop();
    if (name === "google.rpc.ErrorInfo") {
      const info = rpcTypes.lookupType(name).decode(detail.value);
      Object.assign(out, { reason: info.reason, domain: info.domain, metadata: info.metadata });
    } else if (name === "google.rpc.BadRequest") {
      const bad = rpcTypes.lookupType(name).decode(detail.value);
      out.field_violations = bad.field_violations.map(v => ({ field: v.field, reason: v.reason }));
    } else if (name === "ecert.v1.Receipt") {
      const receipt = Receipt.toObject(Receipt.decode(detail.value), { enums: String, longs: String });
      out.receipt = { outcome: receipt.outcome, message_id: receipt.message_id, signature_bytes: receipt.signature.length };
    }
  }
  return out;
}

function call(client, method, request) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise(resolve => {
    client[method](request, { deadline }, (error, response) =>
      resolve(error ? { ok: false, error: richError(error) } : { ok: true, value: response }));
  });
}

const credentials = grpc.credentials.createInsecure();
const transmission = new ecert.TransmissionService(target, credentials);
const quota = new ecert.QuotaService(target, credentials);

const results = {};
results.get_existing = await call(transmission, "GetCertificate", { issuing_country: "MX", certificate_number: "MX26-00000001" });
results.get_missing = await call(transmission, "GetCertificate", { issuing_country: "MX", certificate_number: "MX26-99999999" });
results.get_blank = await call(transmission, "GetCertificate", {});
results.list_first_page = await call(transmission, "ListCertificates", { issuing_country: "MX", page_size: 1 });
if (results.list_first_page.ok) {
  results.list_second_page = await call(transmission, "ListCertificates",
    { issuing_country: "MX", page_size: 1, page_token: results.list_first_page.value.next_page_token });
}
results.activity_unmatched = await call(transmission, "GetActivityReport", { issuing_country: "MX", condition: "CERTIFICATE_CONDITION_UNMATCHED" });
results.submit_unsigned = await call(transmission, "SubmitCertificate", {
  envelope: { message_id: "node-1", sender: "MX", action: "TRANSMISSION_ACTION_CREATE", sent_at: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 },
              certificate: { certificate_number: "MX26-00000077", issuing_country: "MX" }, key_id: "mx-se-2026-1" },
});
results.list_quotas = await call(quota, "ListQuotas", {});

// Buffers (digests, signatures) as hex, so the output is plain JSON.
console.log(JSON.stringify(results, (_k, v) => (v && v.type === "Buffer" && Array.isArray(v.data) ? Buffer.from(v.data).toString("hex") : v)));
transmission.close();
quota.close();
