// bench/node/calls.mjs seed|sdk BASE_URL ALG [SECONDS]: sequential GET /api/v1/users per wall
// second against the bench nginx, with a cached token and a fresh DPoP proof per call.
//   seed  the seed's managementApiCall (fetch + jsonwebtoken), key bytes in its cache fields,
//         and the body read as JSON as the seed's app.js does
//   sdk   @okta/okta-sdk-nodejs: client.userApi.listUsers() iterated to the end (one GET)
import fs from 'node:fs';
import { makeSeed } from './seed.mjs';
import { ACCESS_TOKEN, loadKey, cpu, wall, timed, out } from './common.mjs';

const [who, base, alg = 'ES256', secs = '3'] = process.argv.slice(2);
const seconds = Number(secs);
let one;

if (who === 'seed') {
  const key = loadKey(alg);
  const { oktaHelper, oktaService } = makeSeed({
    orgUrl: base, clientId: '0oabench000000000000', scopes: 'okta.users.read',
    dpopPrivateKeyFile: key.pemPath, dpopPublicKeyFile: key.jwkPath, dpopAlg: alg,
  });
  oktaHelper.dpopPrivateKey = key.pem;
  oktaHelper.dpopPublicKey = Buffer.from(JSON.stringify(key.publicJwk));
  // A cached token: the seed's authenticate() treats nginx's first-try 200 as a failure
  // ("Authentication Failed"), so its token field is filled directly.
  oktaHelper.accessToken = ACCESS_TOKEN;
  one = async () => {
    const r = await oktaService.managementApiCall('/api/v1/users', 'GET');
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    const body = await r.json();
    if (!body[0].id) throw new Error('unexpected body');
  };
} else if (who === 'sdk') {
  const okta = (await import('@okta/okta-sdk-nodejs')).default;
  // The SDK signs DPoP proofs with its one private key (the client-assertion key) and always
  // writes alg RS256 (src/dpop.js): ALG picks that key.
  const pemPath = `${process.env.BENCH_KEYS}/${alg === 'RS256' ? 'cc' : 'es256'}.pem`;
  const client = new okta.Client({
    orgUrl: base, authorizationMode: 'PrivateKey', clientId: '0oabench000000000000',
    scopes: ['okta.users.read'], privateKey: fs.readFileSync(pemPath, 'utf8'),
  });
  // A cached DPoP token. The SDK enters DPoP mode only after a use_dpop_nonce answer, which
  // this static endpoint never gives, so its state is set as after a DPoP token exchange.
  client.oauth.accessToken = { token_type: 'DPoP', access_token: ACCESS_TOKEN, expires_in: 3600, scope: 'okta.users.read' };
  client.oauth.isDPoP = true;
  let sent = 0;
  client.requestExecutor.on('request', (req) => {
    if (!String(req.headers.Authorization).startsWith('DPoP ') || !req.headers.DPoP) throw new Error('not DPoP');
    sent++;
  });
  one = async () => {
    const users = await client.userApi.listUsers();
    let n = 0;
    for await (const u of users) { if (u.id) n++; }
    if (n === 0) throw new Error('no users');
  };
  try {
    await one();
  } catch (e) {
    out('error', JSON.stringify(String(e.message).split('\n')[0].slice(0, 200)));
    process.exit(0);
  }
  if (sent !== 1) throw new Error(`expected one request per listUsers, saw ${sent}`);
} else {
  throw new Error('usage: calls.mjs seed|sdk BASE_URL ALG [SECONDS]');
}

await one();
await timed(0.3, wall, 4, one); // warm-up
const c0 = cpu();
const { n, t } = await timed(seconds, wall, 4, one);
out('n', n);
out('wall_s', t.toFixed(3));
out('cpu_s', (cpu() - c0).toFixed(3));
out('rate', (n / t).toFixed(1));
