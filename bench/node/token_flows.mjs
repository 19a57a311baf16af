// bench/node/token_flows.mjs seed|sdk: token round trips of the Node peers against the Okta
// emulator (whose /__emulator/log is read here). Environment: EMU_URL, CLIENT_ID, CC_KEY (PEM
// file), DPOP_KEY (PEM file), DPOP_JWK (the seed's public JWK file).
import fs from 'node:fs';
import { makeSeed } from './seed.mjs';
import { out } from './common.mjs';

const [who] = process.argv.slice(2);
const url = process.env.EMU_URL;

async function control(method, path) {
  const r = await fetch(url + path, { method });
  return r.json();
}
async function tokenRequests() {
  const log = await control('GET', '/__emulator/log');
  return log.filter((e) => e.kind === 'token').length;
}
async function apiStatuses() {
  const log = await control('GET', '/__emulator/log');
  return log.filter((e) => e.kind === 'api').map((e) => e.status).join(',');
}

if (who === 'seed') {
  const { oktaHelper, oktaService } = makeSeed({
    orgUrl: url, clientId: process.env.CLIENT_ID, scopes: 'okta.users.read',
    ccPrivateKeyFile: process.env.CC_KEY, dpopPrivateKeyFile: process.env.DPOP_KEY,
    dpopPublicKeyFile: process.env.DPOP_JWK, dpopAlg: 'RS256',
  });
  for (const phase of ['cold', 'renewal']) {
    await control('POST', '/__emulator/reset');
    oktaHelper.accessToken = ''; // the seed has no expiry handling: renewing is authenticating again
    const token = await oktaService.authenticate();
    out(`${phase}_token_requests`, await tokenRequests());
    out(`${phase}_ok`, token ? 1 : 0);
    const r = await oktaService.managementApiCall('/api/v1/users', 'GET');
    await r.arrayBuffer();
    out(`${phase}_api_status`, r.status);
  }
} else if (who === 'sdk') {
  const okta = (await import('@okta/okta-sdk-nodejs')).default;
  await control('POST', '/__emulator/reset');
  const client = new okta.Client({
    orgUrl: url, authorizationMode: 'PrivateKey', clientId: process.env.CLIENT_ID,
    scopes: ['okta.users.read'], privateKey: fs.readFileSync(process.env.CC_KEY, 'utf8'),
  });
  let error = '';
  try {
    await client.oauth.getAccessToken();
  } catch (e) {
    error = `${e.name || 'Error'} ${e.status || ''} ${e.errorCode || ''} ${(e.message || '').split('\n')[0]}`;
  }
  out('cold_token_requests', await tokenRequests());
  out('cold_ok', error ? 0 : 1);
  out('is_dpop', client.oauth.isDPoP ? 1 : 0);
  out('error', JSON.stringify(error.replace(/\s+/g, ' ').trim().slice(0, 200)));
  // What an application then sees: one list call
  let callError = '';
  try {
    const users = await client.userApi.listUsers();
    for await (const u of users) void u;
  } catch (e) {
    callError = `${e.name || 'Error'} ${e.status || ''} ${(e.message || '').split('\n')[0]}`;
  }
  out('call_error', JSON.stringify(callError.replace(/\s+/g, ' ').trim().slice(0, 200)));
  out('api_statuses', JSON.stringify(await apiStatuses()));
  // Renewal: the SDK keeps its token until a 401, then clears it and asks again (http.js); the
  // nonce is not remembered, so each new token starts without one.
  await control('POST', '/__emulator/reset');
  client.oauth.clearCachedAccessToken();
  let renewError = '';
  try { await client.oauth.getAccessToken(); } catch (e) { renewError = String(e.message).split('\n')[0]; }
  out('renewal_token_requests', await tokenRequests());
  out('renewal_ok', renewError ? 0 : 1);
} else {
  throw new Error('usage: token_flows.mjs seed|sdk');
}
