// bench/node/common.mjs: keys, timing and output shared by the Node peer scripts.
import fs from 'node:fs';
import crypto from 'node:crypto';

export const HTU = 'https://example.okta.com/api/v1/users';
export const ACCESS_TOKEN = process.env.BENCH_ACCESS_TOKEN || 'eyJ' + 'x'.repeat(880);

// The PEM files bench/run made (PKCS#8), and the seed's public-key JSON file next to them.
export function loadKey(alg) {
  const dir = process.env.BENCH_KEYS;
  if (!dir) throw new Error('BENCH_KEYS is not set');
  const pemPath = `${dir}/${alg.toLowerCase()}.pem`;
  const jwkPath = `${dir}/${alg.toLowerCase()}.pub.json`;
  const pem = fs.readFileSync(pemPath);
  const keyObject = crypto.createPrivateKey(pem);
  const publicJwk = crypto.createPublicKey(keyObject).export({ format: 'jwk' });
  if (!fs.existsSync(jwkPath)) fs.writeFileSync(jwkPath, JSON.stringify(publicJwk));
  return { alg, pemPath, jwkPath, pem, keyObject, publicJwk };
}

// CPU seconds of this process, all threads (user + system), like os.clock() in Lua.
export function cpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

export function wall() {
  return performance.now() / 1000;
}

// Runs fn until `seconds` of clock() have passed, `batch` calls at a time (awaited when async).
export async function timed(seconds, clock, batch, fn) {
  let n = 0;
  const t0 = clock();
  let t;
  do {
    for (let i = 0; i < batch; i++) {
      const r = fn();
      if (r && typeof r.then === 'function') await r;
    }
    n += batch;
    t = clock() - t0;
  } while (t < seconds);
  return { n, t };
}

export function out(k, v) {
  process.stdout.write(`${k} ${v}\n`);
}
