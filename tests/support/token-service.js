// A stand-in Entra ID token service for the tests (tests/common/entra.rs starts it).
//
// HTTPS on 127.0.0.1 (object_store's OAuth clients inherit the store's HTTPS-only setting):
//   POST /<tenant>/oauth2/v2.0/token   client_credentials grant, with a client secret or a
//                                      federated client_assertion (workload identity)
//   GET  /msi/token                    managed identity, IMDS form (`Metadata: true`)
//   GET  /appservice/token             managed identity, App Service form (`X-IDENTITY-HEADER`)
//   GET  /cli/token                    for the stand-in `az account get-access-token`
// Tokens are JWTs with a dummy signature: Azurite's `--oauth basic` checks issuer, audience
// and lifetime only. Never logs a secret or a token.
//
// Argument: a private JSON file {cert, key, tenant, clientId, clientSecret, assertion,
// identityHeader, expiresIn, tokenLifetime, countsFile}. `tokenLifetime` (seconds, may be
// negative) sets the token's own `exp`; `expiresIn` is what the answer claims, so a test
// can hand out tokens that Azurite must refuse. After every request it rewrites
// `countsFile` with the grants made: {"client_secret": n, "federated": n, "imds": n,
// "app_service": n, "azure_cli": n, "refused": n}. Prints its port on the first line of stdout.
"use strict";
const https = require("https");
const fs = require("fs");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const counts = { client_secret: 0, federated: 0, imds: 0, app_service: 0, azure_cli: 0, refused: 0 };

function writeCounts() {
  fs.writeFileSync(`${cfg.countsFile}.tmp`, JSON.stringify(counts));
  fs.renameSync(`${cfg.countsFile}.tmp`, cfg.countsFile);
}
const OID = "0b4a5c3e-1111-4222-8333-944455556666";

function b64url(obj) {
  return Buffer.from(JSON.stringify(obj)).toString("base64url");
}

function token() {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    aud: "https://storage.azure.com",
    iss: `https://sts.windows.net/${cfg.tenant}/`,
    iat: now - 60,
    nbf: now - 60,
    exp: now + cfg.tokenLifetime,
    oid: OID,
    tid: cfg.tenant,
    appid: cfg.clientId,
    sub: OID,
    ver: "1.0",
  };
  return `${b64url({ typ: "JWT", alg: "RS256" })}.${b64url(claims)}.c2lnbmF0dXJl`;
}

function reply(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function refuse(res, why) {
  counts.refused += 1;
  reply(res, 400, { error: "invalid_request", error_description: why });
}

function oauth(req, res, body) {
  const form = new URLSearchParams(body);
  if (form.get("grant_type") !== "client_credentials") return refuse(res, "grant_type");
  if (form.get("client_id") !== cfg.clientId) return refuse(res, "client_id");
  if (form.get("scope") !== "https://storage.azure.com/.default") return refuse(res, "scope");
  let grant;
  if (form.has("client_assertion")) {
    if (form.get("client_assertion_type") !== "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
      return refuse(res, "client_assertion_type");
    if (form.get("client_assertion") !== cfg.assertion) return refuse(res, "client_assertion");
    grant = "federated";
  } else if (form.has("client_secret")) {
    if (form.get("client_secret") !== cfg.clientSecret) return refuse(res, "client_secret");
    grant = "client_secret";
  } else {
    return refuse(res, "no client credential");
  }
  counts[grant] += 1;
  reply(res, 200, { token_type: "Bearer", expires_in: cfg.expiresIn, access_token: token() });
}

function managed(req, res, url, grant) {
  if (url.searchParams.get("resource") !== "https://storage.azure.com") return refuse(res, "resource");
  if (!url.searchParams.get("api-version")) return refuse(res, "api-version");
  if (grant === "imds" && req.headers["metadata"] !== "true") return refuse(res, "Metadata header");
  if (grant === "app_service" && req.headers["x-identity-header"] !== cfg.identityHeader)
    return refuse(res, "X-IDENTITY-HEADER");
  counts[grant] += 1;
  const expiresOn = Math.floor(Date.now() / 1000) + cfg.expiresIn;
  reply(res, 200, {
    access_token: token(),
    expires_on: String(expiresOn),
    resource: "https://storage.azure.com",
    token_type: "Bearer",
  });
}

// The Azure CLI's form: `expiresOn` in local time, "YYYY-MM-DD HH:MM:SS.ffffff".
function cli(req, res) {
  counts.azure_cli += 1;
  const at = new Date(Date.now() + cfg.expiresIn * 1000);
  const two = (n) => String(n).padStart(2, "0");
  const expiresOn =
    `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ` +
    `${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}.000000`;
  reply(res, 200, { accessToken: token(), expiresOn, tokenType: "Bearer", tenant: cfg.tenant });
}

const server = https.createServer(
  { cert: fs.readFileSync(cfg.cert), key: fs.readFileSync(cfg.key) },
  (req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      route(req, res, body);
      writeCounts();
    });
  },
);

function route(req, res, body) {
  const url = new URL(req.url, "https://127.0.0.1");
  if (req.method === "POST" && url.pathname === `/${cfg.tenant}/oauth2/v2.0/token`)
    return oauth(req, res, body);
  if (req.method === "GET" && url.pathname === "/msi/token") return managed(req, res, url, "imds");
  if (req.method === "GET" && url.pathname === "/appservice/token")
    return managed(req, res, url, "app_service");
  if (req.method === "GET" && url.pathname === "/cli/token") return cli(req, res);
  counts.refused += 1;
  reply(res, 404, { error: "not_found", path: url.pathname });
}

writeCounts();
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
