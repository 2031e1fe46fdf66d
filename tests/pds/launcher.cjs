// Starts a did:plc directory and a Bluesky PDS for tests, on the ports given in the
// environment, then prints one JSON line {"pds": url, "plc": url} and runs until killed.
// Run with Node >= 22 from the harness cache (see tests/pds/install.sh).
"use strict";
const crypto = require("node:crypto");
const path = require("node:path");

async function main() {
  const { PlcServer, Database } = require("@did-plc/server");
  const pdsLib = require("@atproto/pds");
  const { PDS, envToCfg, envToSecrets, readEnv } = pdsLib;
  const { Secp256k1Keypair } = require("@atproto/crypto");

  const dataDir = process.env.ORBITPOST_PDS_DIR;
  const plcPort = Number(process.env.ORBITPOST_PLC_PORT);
  const pdsPort = Number(process.env.ORBITPOST_PDS_PORT);
  if (!dataDir || !plcPort || !pdsPort) throw new Error("set ORBITPOST_PDS_DIR, ORBITPOST_PLC_PORT, ORBITPOST_PDS_PORT");

  const plc = await PlcServer.create({ db: Database.mock(), port: plcPort });
  await plc.start();

  const rotation = await Secp256k1Keypair.create({ exportable: true });
  const rotationHex = Buffer.from(await rotation.export()).toString("hex");
  Object.assign(process.env, {
    PDS_HOSTNAME: "localhost",
    PDS_PORT: String(pdsPort),
    PDS_DEV_MODE: "true",
    PDS_DATA_DIRECTORY: dataDir,
    PDS_BLOBSTORE_DISK_LOCATION: path.join(dataDir, "blobs"),
    PDS_DID_PLC_URL: `http://127.0.0.1:${plcPort}`,
    PDS_INVITE_REQUIRED: "false",
    PDS_SERVICE_HANDLE_DOMAINS: ".test",
    PDS_RATE_LIMITS_ENABLED: "false",
    PDS_JWT_SECRET: crypto.randomBytes(16).toString("hex"),
    PDS_ADMIN_PASSWORD: crypto.randomBytes(16).toString("hex"),
    PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: rotationHex,
    LOG_ENABLED: process.env.LOG_ENABLED || "false",
  });
  const env = readEnv();
  const pds = await PDS.create(envToCfg(env), envToSecrets(env));
  await pds.start();
  process.stdout.write(
    JSON.stringify({
      pds: `http://127.0.0.1:${pdsPort}`,
      plc: `http://127.0.0.1:${plcPort}`,
      admin_password: process.env.PDS_ADMIN_PASSWORD,
    }) + "\n",
  );
  const stop = async () => {
    await pds.destroy().catch(() => {});
    await plc.destroy().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  process.stderr.write(`PDS launcher failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
