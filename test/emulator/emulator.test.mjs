// Tests for the Okta emulator: node --test (from test/emulator).
// The server runs as a child process, driven with jose-made client
// assertions and DPoP proofs, exactly as oktadpop would drive it.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as jose from 'jose';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SERVER = path.join(HERE, 'server.mjs');
const ALL_SCOPE_LIST = ['okta.users.read', 'okta.users.manage', 'okta.groups.read', 'okta.groups.manage',
  'okta.apps.read', 'okta.apps.manage', 'okta.logs.read'];
const ALL_SCOPES = ALL_SCOPE_LIST.join(' ');
const ALGS = 'RS256 RS384 RS512 ES256 ES384 ES512';
const PROOF_HEADER_MISSING = 'The DPoP proof JWT header is missing.';

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

// Starts server.mjs and resolves with { url, proc } once the ready line shows.
function startServer(configFile, extraArgs = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [SERVER, '--config', configFile, '--port', '0', ...extraArgs],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stderr.on('data', (d) => { err += d; });
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve({ ...JSON.parse(out.slice(0, nl)), proc });
    });
    proc.on('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
}

function stopServer(s) {
  return new Promise((resolve) => {
    if (!s || s.proc.exitCode !== null) return resolve();
    s.proc.removeAllListeners('exit');
    s.proc.on('exit', resolve);
    s.proc.kill('SIGTERM');
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Raw HTTP(S) request, keeping every header line (fetch would merge the Link
// lines). Resolves { status, headers, rawHeaders, body, json } or rejects on
// a socket error.
function request(url, { method = 'GET', headers = {}, body, ca, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(u, { method, headers, ca, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('aborted')));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, body: text, json });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// One request on an HTTP/2 session. Resolves { status, headers, body, json }.
function h2request(session, pathAndQuery, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':method': method, ':path': pathAndQuery, ...headers });
    let status;
    let hdrs;
    const chunks = [];
    s.on('response', (h) => { status = h[':status']; hdrs = h; });
    s.on('data', (c) => chunks.push(c));
    s.on('error', reject);
    s.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let json;
      try { json = JSON.parse(text); } catch { json = undefined; }
      resolve({ status, headers: hdrs, body: text, json });
    });
    if (body !== undefined) s.write(body);
    s.end();
  });
}

// Every value of a header, one per header line as sent.
function rawHeaderValues(res, name) {
  const values = [];
  for (let i = 0; i < res.rawHeaders.length; i += 2) {
    if (res.rawHeaders[i].toLowerCase() === name) values.push(res.rawHeaders[i + 1]);
  }
  return values;
}

// WWW-Authenticate -> { scheme, algs, realm, scope, error, error_description, resource, ... }
function challengeOf(res) {
  const h = res.headers['www-authenticate'];
  assert.ok(h, `no WWW-Authenticate on ${res.status}`);
  const [, scheme, rest] = /^(\S+) (.*)$/.exec(h);
  const params = { scheme };
  for (const [, k, v] of rest.matchAll(/(\w+)="([^"]*)"/g)) params[k] = v;
  return params;
}

const nextLink = (res, b) => {
  const n = rawHeaderValues(res, 'link').find((l) => l.endsWith('rel="next"'));
  return n ? n.slice(1, n.indexOf('>')).slice(b.length) : null;
};

async function makeClient(clientId, { alg = 'RS256', scopes, dpop = true, extra = {} } = {}) {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await jose.exportJWK(publicKey)), kid: `${clientId}-key`, alg };
  return { clientId, alg, privateKey, config: { client_id: clientId, jwks: { keys: [jwk] }, scopes, dpop_required: dpop, ...extra } };
}

async function makeDpopKey(alg = 'ES256') {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  return { alg, privateKey, jwk: await jose.exportJWK(publicKey) };
}

function assertion(client, base, overrides = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: client.clientId, sub: client.clientId, aud: `${base}/oauth2/v1/token`,
    iat: now, exp: now + 300, jti: crypto.randomUUID(), ...overrides,
  };
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg: client.alg, kid: `${client.clientId}-key` })
    .sign(client.privateKey);
}

const ath = (token) => crypto.createHash('sha256').update(token).digest('base64url');

function proof(key, { htm, htu, nonce, accessToken, jti = crypto.randomUUID(), iat, typ = 'dpop+jwt', jwk } = {}) {
  const claims = { jti, htm, htu, iat: iat ?? Math.floor(Date.now() / 1000) };
  if (nonce) claims.nonce = nonce;
  if (accessToken) claims.ath = ath(accessToken);
  return new jose.SignJWT(claims).setProtectedHeader({ alg: key.alg, typ, jwk: jwk || key.jwk }).sign(key.privateKey);
}

const tokenForm = async (client, b, extra = {}) => ({
  grant_type: 'client_credentials', scope: 'okta.users.read',
  client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
  client_assertion: await assertion(client, b), ...extra,
});

function tokenRequest(base, form, dpopProof) {
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  if (dpopProof) headers.DPoP = dpopProof;
  return request(`${base}/oauth2/v1/token`, { method: 'POST', headers, body: new URLSearchParams(form).toString() });
}

// The full client flow: first try without a nonce, then again with the nonce.
// Resolves the token response (status 200).
async function tokenResponse(base, client, key, scope = ALL_SCOPES) {
  let nonce;
  for (let i = 0; i < 2; i++) {
    const form = await tokenForm(client, base, { scope });
    const p = key ? await proof(key, { htm: 'POST', htu: `${base}/oauth2/v1/token`, nonce }) : undefined;
    const res = await tokenRequest(base, form, p);
    if (res.status === 400 && res.json.error === 'use_dpop_nonce') { nonce = res.headers['dpop-nonce']; continue; }
    assert.equal(res.status, 200, res.body);
    return res;
  }
  throw new Error('no token after nonce retry');
}
const getToken = async (...args) => (await tokenResponse(...args)).json.access_token;

// Calls the management API with a DPoP-bound token (fresh proof each time).
async function api(base, token, key, method, pathAndQuery, { nonce, body, htu, proofOverrides = {} } = {}) {
  const pathOnly = pathAndQuery.split('?')[0];
  const headers = { Authorization: `DPoP ${token}` };
  headers.DPoP = await proof(key, {
    htm: method, htu: htu ?? base + decodeURIComponent(pathOnly), nonce, accessToken: token, ...proofOverrides,
  });
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return request(base + pathAndQuery, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

const control = (base, body) => request(`${base}/__emulator/control`,
  { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
const getLog = async (base) => (await request(`${base}/__emulator/log`)).json;
const getStats = async (base) => (await request(`${base}/__emulator/stats`)).json;

// Per-minute windows: a test that counts inside one window starts early in it.
async function awayFromMinuteEdge() {
  const s = new Date().getUTCSeconds();
  if (s >= 52) await sleep((61 - s) * 1000);
}

// ---------------------------------------------------------------------------
// Fixture: one server for the whole file, reset before each test
// ---------------------------------------------------------------------------

let srv;
let base;
let dpopClient;
let bearerClient;
let readOnlyClient;
let roAdminClient;
let groupAdminClient;
let partialClient;
let key; // the DPoP key of the main client
let token; // a DPoP-bound token with all scopes (fetched once)
let tmpDir;

before(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'okta-emu-test-'));
  dpopClient = await makeClient('0oadpop000000000001', { scopes: ALL_SCOPE_LIST });
  bearerClient = await makeClient('0oabearer0000000001', { alg: 'ES256', dpop: false });
  readOnlyClient = await makeClient('0oaread00000000001', { scopes: ['okta.users.read', 'okta.logs.read'] });
  roAdminClient = await makeClient('0oaroadmin000000001', { scopes: ALL_SCOPE_LIST, extra: { admin_role: 'READ_ONLY_ADMIN' } });
  groupAdminClient = await makeClient('0oagroupadmin000001', { scopes: ALL_SCOPE_LIST, extra: { admin_role: 'GROUP_ADMIN' } });
  partialClient = await makeClient('0oapartial000000001',
    { scopes: ['okta.users.read', 'okta.groups.read'], extra: { grant_scopes: ['okta.users.read'] } });
  const cfg = path.join(tmpDir, 'config.json');
  fs.writeFileSync(cfg, JSON.stringify({
    clients: [dpopClient, bearerClient, readOnlyClient, roAdminClient, groupAdminClient, partialClient].map((c) => c.config),
    users: 450, groups: 30, log_events: 50,
  }));
  srv = await startServer(cfg);
  base = srv.url;
  key = await makeDpopKey();
  token = await getToken(base, dpopClient, key);
});

after(async () => {
  await stopServer(srv);
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

beforeEach(async () => {
  await request(`${base}/__emulator/reset`, { method: 'POST' });
  await control(base, { rs_nonce: false, rate_limits: {}, app_share: 0.5, concurrency_limit: 75, latency_ms: 0, clock_skew: 0,
    app_shares: {}, rate_window_seconds: null, other_apps_use: {}, rate_limit_headers: true, apps_subpath_bucket: '/api/v1/apps' });
});

// ---------------------------------------------------------------------------
// Authorization server
// ---------------------------------------------------------------------------

test('token flow: use_dpop_nonce first, then a DPoP-bound token', async () => {
  const k = await makeDpopKey('RS256');
  const htu = `${base}/oauth2/v1/token`;
  const r1 = await tokenRequest(base, await tokenForm(dpopClient, base), await proof(k, { htm: 'POST', htu }));
  assert.equal(r1.status, 400);
  assert.deepEqual(r1.json, { error: 'use_dpop_nonce', error_description: 'Authorization server requires nonce in DPoP proof.' });
  const nonce = r1.headers['dpop-nonce'];
  assert.ok(nonce);

  const r2 = await tokenRequest(base, await tokenForm(dpopClient, base), await proof(k, { htm: 'POST', htu, nonce }));
  assert.equal(r2.status, 200, r2.body);
  assert.equal(r2.json.token_type, 'DPoP');
  assert.equal(r2.json.expires_in, 3600);
  assert.equal(r2.json.scope, 'okta.users.read');
  assert.ok(r2.headers['dpop-nonce']);

  const jwks = jose.createLocalJWKSet((await request(`${base}/oauth2/v1/keys`)).json);
  const { payload } = await jose.jwtVerify(r2.json.access_token, jwks, { issuer: base, audience: base });
  assert.equal(payload.cnf.jkt, await jose.calculateJwkThumbprint(k.jwk));
  assert.deepEqual(payload.scp, ['okta.users.read']);
  assert.equal(payload.cid, dpopClient.clientId);

  const log = (await getLog(base)).filter((e) => e.kind === 'token');
  assert.equal(log.length, 2);
  assert.equal(log[0].proof_nonce, null);
  assert.equal(log[1].proof_nonce, nonce);
  assert.deepEqual(log.map((e) => e.status), [400, 200]);
});

test('client assertion jti replay is rejected with 401 (even after use_dpop_nonce)', async () => {
  const k = await makeDpopKey();
  const htu = `${base}/oauth2/v1/token`;
  const form = await tokenForm(dpopClient, base);
  const r1 = await tokenRequest(base, form, await proof(k, { htm: 'POST', htu }));
  assert.equal(r1.json.error, 'use_dpop_nonce');
  const r2 = await tokenRequest(base, form, await proof(k, { htm: 'POST', htu, nonce: r1.headers['dpop-nonce'] }));
  assert.equal(r2.status, 401);
  assert.deepEqual(r2.json, { error: 'invalid_client', error_description: 'The client_assertion token has already been used.' });
});

test('token endpoint: bad htu, missing proof, unknown scope, wrong aud, too long, HS256 proof', async () => {
  const k = await makeDpopKey();
  assert.equal((await tokenRequest(base, {}, undefined)).status, 400); // no grant_type
  const form = (extra) => tokenForm(dpopClient, base, extra);
  const bad = await tokenRequest(base, await form(), await proof(k, { htm: 'POST', htu: `${base}/oauth2/default/v1/token` }));
  assert.equal(bad.status, 400);
  assert.deepEqual(bad.json, { error: 'invalid_dpop_proof', error_description: "'htu' claim in the DPoP proof JWT is invalid." });

  const missing = await tokenRequest(base, await form(), undefined);
  assert.deepEqual(missing.json, { error: 'invalid_dpop_proof', error_description: PROOF_HEADER_MISSING });

  const unknown = await tokenRequest(base, await form({ scope: 'okta.users.read okta.policies.read' }), undefined);
  assert.equal(unknown.status, 400);
  assert.deepEqual(unknown.json,
    { error: 'invalid_scope', error_description: 'One or more scopes are not configured for the authorization server resource.' });

  const aud = await tokenRequest(base, {
    ...(await form()),
    client_assertion: await assertion(dpopClient, base, { aud: 'https://elsewhere.example/oauth2/v1/token' }),
  });
  assert.equal(aud.status, 401);
  assert.equal(aud.json.error_description, 'The audience claim for client_assertion must be the endpoint invoked for the request.');

  const now = Math.floor(Date.now() / 1000);
  const far = await tokenRequest(base, { ...(await form()), client_assertion: await assertion(dpopClient, base, { exp: now + 7200 }) });
  assert.equal(far.status, 401);
  assert.equal(far.json.error_description, 'The client_assertion token has an expiration too far into the future.');

  const hs = await new jose.SignJWT({ jti: 'x', htm: 'POST', htu: `${base}/oauth2/v1/token`, iat: now })
    .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: 'c2VjcmV0' } })
    .sign(new TextEncoder().encode('secret-secret-secret-secret-secret'));
  const hsRes = await tokenRequest(base, await form(), hs);
  assert.deepEqual(hsRes.json, { error: 'invalid_dpop_proof', error_description: "'alg' header in the DPoP proof JWT is invalid." });
});

test('partial scope grants: fewer scopes in the token, consent_required when none is granted', async () => {
  const k = await makeDpopKey();
  const res = await tokenResponse(base, partialClient, k, 'okta.users.read okta.groups.read');
  assert.equal(res.json.scope, 'okta.users.read');
  assert.deepEqual(jose.decodeJwt(res.json.access_token).scp, ['okta.users.read']);
  // The missing scope shows later, as insufficient_scope.
  const groupsRes = await api(base, res.json.access_token, k, 'GET', '/api/v1/groups');
  assert.equal(groupsRes.status, 403);
  assert.equal(challengeOf(groupsRes).error, 'insufficient_scope');
  assert.equal(challengeOf(groupsRes).scope, 'okta.groups.read');

  const none = await tokenRequest(base, await tokenForm(partialClient, base, { scope: 'okta.groups.read' }),
    await proof(k, { htm: 'POST', htu: `${base}/oauth2/v1/token` }));
  assert.equal(none.status, 400);
  assert.deepEqual(none.json, { error: 'consent_required', error_description: 'You are not allowed any of the requested scopes.' });
});

test('clock_skew: Date header, assertion and proof times on the emulator clock', async () => {
  const k = await makeDpopKey();
  try {
    await control(base, { clock_skew: 600 });
    const keys = await request(`${base}/oauth2/v1/keys`);
    const skew = Date.parse(keys.headers.date) / 1000 - Date.now() / 1000;
    assert.ok(skew > 595 && skew < 605, String(skew));
    const expired = await tokenRequest(base, await tokenForm(dpopClient, base));
    assert.equal(expired.status, 401);
    assert.deepEqual(expired.json, { error: 'invalid_client', error_description: 'The client_assertion token is expired.' });
    // A proof signed on the client's (real) clock is 10 minutes old for the org.
    const stale = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
    assert.equal(stale.status, 400);
    assert.equal(challengeOf(stale).error_description, 'The DPoP proof JWT is issued more than five minutes in the past.');
    // Signed on the org's clock (as read from Date), both pass.
    const orgNow = Math.floor(Date.parse(keys.headers.date) / 1000);
    const ok = await api(base, token, key, 'GET', '/api/v1/users?limit=1', { proofOverrides: { iat: orgNow } });
    assert.equal(ok.status, 200, ok.body);
    const form = await tokenForm(dpopClient, base, {
      client_assertion: await assertion(dpopClient, base, { iat: orgNow, exp: orgNow + 300 }),
    });
    assert.equal((await tokenRequest(base, form, await proof(k, { htm: 'POST', htu: `${base}/oauth2/v1/token`, iat: orgNow })))
      .json.error, 'use_dpop_nonce');

    await control(base, { clock_skew: -600 });
    const future = await tokenRequest(base, await tokenForm(dpopClient, base, {
      client_assertion: await assertion(dpopClient, base, { exp: Math.floor(Date.now() / 1000) - 300 }),
    }));
    assert.equal(future.status, 401);
    assert.equal(future.json.error_description, 'The client_assertion token must be issued before current time.');
  } finally {
    await control(base, { clock_skew: 0 });
  }
});

test('non-DPoP client gets a Bearer token that works with the Bearer scheme', async () => {
  const t = await getToken(base, bearerClient, null, 'okta.users.read');
  const res = await request(`${base}/api/v1/users/00u000000000000001`, { headers: { Authorization: `Bearer ${t}` } });
  assert.equal(res.status, 200);
  assert.equal(res.json.profile.login, 'user1@example.com');
  const denied = await request(`${base}/api/v1/groups`, { headers: { Authorization: `Bearer ${t}` } });
  assert.equal(denied.status, 403);
  assert.equal(denied.headers['www-authenticate'], `Bearer authorization_uri="${base}/oauth2/v1/authorize", realm="${base}", ` +
    'scope="okta.groups.read", error="insufficient_scope", ' +
    'error_description="The access token provided does not contain the required scopes.", resource="/api/v1/groups"');
});

// ---------------------------------------------------------------------------
// Resource server: Okta's challenges, empty bodies
// ---------------------------------------------------------------------------

test('bad proofs: 400, empty body, Okta parameter set and texts', async () => {
  const htu = `${base}/api/v1/users`;
  const send = (dpop) => request(`${base}/api/v1/users?limit=1`, { headers: { Authorization: `DPoP ${token}`, DPoP: dpop } });
  const desc = async (dpop) => {
    const res = await send(dpop);
    assert.equal(res.status, 400);
    assert.equal(res.body, '');
    return challengeOf(res).error_description;
  };

  const p1 = await proof(key, { htm: 'GET', htu, accessToken: token });
  const p2 = await proof(key, { htm: 'GET', htu, accessToken: token });
  assert.equal(await desc([p1, p2]), 'DPoP proof JWT cannot be parsed.');
  assert.equal(await desc('not.a.jwt'), 'DPoP proof JWT cannot be parsed.');
  const privateJwk = await jose.exportJWK(key.privateKey);
  assert.equal(await desc(await proof(key, { htm: 'GET', htu, accessToken: token, jwk: privateJwk })),
    "'jwk' header in the DPoP proof JWT is invalid.");
  assert.equal(await desc(await proof(key, { htm: 'GET', htu, accessToken: token, typ: 'JWT' })),
    "'typ' header in the DPoP proof JWT is invalid.");
  const now = Math.floor(Date.now() / 1000);
  assert.equal(await desc(await proof(key, { htm: 'GET', htu, accessToken: token, iat: now - 400 })),
    'The DPoP proof JWT is issued more than five minutes in the past.');
  assert.equal(await desc(await proof(key, { htm: 'GET', htu, accessToken: token, iat: now + 120 })),
    "'iat' claim in the DPoP proof JWT is invalid.");
  // 4 minutes old is still inside Okta's window.
  assert.equal((await send(await proof(key, { htm: 'GET', htu, accessToken: token, iat: now - 240 }))).status, 200);

  const htm = await send(await proof(key, { htm: 'POST', htu, accessToken: token }));
  assert.equal(htm.headers['www-authenticate'], `DPoP algs="${ALGS}", authorization_uri="${base}/oauth2/v1/authorize", ` +
    `realm="${base}", scope="okta.users.read", error="invalid_dpop_proof", ` +
    `error_description="'htm' claim in the DPoP proof JWT is invalid.", resource="/api/v1/users"`);
  assert.equal(htm.headers['content-length'], '0');
  assert.equal(htm.headers['x-rate-limit-limit'], '600');
  const noProof = await request(`${base}/api/v1/users`, { headers: { Authorization: `DPoP ${token}` } });
  assert.equal(challengeOf(noProof).error_description, PROOF_HEADER_MISSING);
  assert.equal((await getLog(base)).at(-1).error, 'invalid_dpop_proof');
});

test('tokens: missing, Bearer scheme with a DPoP token, revoked', async () => {
  const none = await request(`${base}/api/v1/users`);
  assert.equal(none.status, 401);
  assert.equal(none.body, '');
  assert.deepEqual(challengeOf(none), {
    scheme: 'DPoP', algs: ALGS, authorization_uri: `${base}/oauth2/v1/authorize`, realm: base, scope: 'okta.users.read',
    error: 'invalid_token', error_description: 'The access token is invalid.', resource: '/api/v1/users',
  });

  const bearer = await request(`${base}/api/v1/users`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(bearer.status, 400);
  assert.equal(bearer.body, '');
  assert.equal(bearer.headers['www-authenticate'], `Bearer authorization_uri="${base}/oauth2/v1/authorize", realm="${base}", ` +
    'scope="okta.users.read", error="invalid_request", error_description="The resource request requires a DPoP proof.", ' +
    'resource="/api/v1/users"');

  const t = await getToken(base, dpopClient, key, 'okta.users.read');
  await control(base, { expire_tokens: true });
  const expired = await api(base, t, key, 'POST', '/api/v1/users/00u000000000000001/lifecycle/suspend');
  assert.equal(expired.status, 401);
  assert.equal(expired.body, '');
  assert.equal(challengeOf(expired).error, 'invalid_token');
  assert.equal(challengeOf(expired).scope, 'okta.users.manage');
  await request(`${base}/__emulator/reset`, { method: 'POST' }); // un-revoke the shared token
});

test('ath mismatch, cnf.jkt mismatch, jti replay, query in htu', async () => {
  const d = (res) => { assert.equal(res.status, 400); return challengeOf(res).error_description; };
  assert.equal(d(await api(base, token, key, 'GET', '/api/v1/users?limit=1', { proofOverrides: { accessToken: 'other' } })),
    "'ath' claim in the DPoP proof JWT is invalid.");
  assert.equal(d(await api(base, token, await makeDpopKey(), 'GET', '/api/v1/users?limit=1')),
    'The DPoP proof JWT key does not match the access token.');

  const p = await proof(key, { htm: 'GET', htu: `${base}/api/v1/users`, accessToken: token });
  const headers = { Authorization: `DPoP ${token}`, DPoP: p };
  assert.equal((await request(`${base}/api/v1/users?limit=1`, { headers })).status, 200);
  assert.equal(d(await request(`${base}/api/v1/users?limit=1`, { headers })), 'The DPoP proof JWT has already been used.');

  assert.equal(d(await api(base, token, key, 'GET', '/api/v1/users?after=00u000000000000200',
    { htu: `${base}/api/v1/users?after=00u000000000000200` })), "'htu' claim in the DPoP proof JWT is invalid.");
});

test('rs_nonce mode: 401 use_dpop_nonce with the full challenge, then success', async () => {
  const st = (await control(base, { rs_nonce: true })).json;
  const r1 = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(r1.status, 401);
  assert.equal(r1.body, '');
  assert.equal(r1.headers['www-authenticate'], `DPoP algs="${ALGS}", authorization_uri="${base}/oauth2/v1/authorize", ` +
    `realm="${base}", scope="okta.users.read", error="use_dpop_nonce", ` +
    'error_description="Resource server requires nonce in DPoP proof", resource="/api/v1/users"');
  const nonce = r1.headers['dpop-nonce'];
  assert.ok(nonce);
  assert.notEqual(nonce, st.as_nonce);
  const r2 = await api(base, token, key, 'GET', '/api/v1/users?limit=1', { nonce });
  assert.equal(r2.status, 200);
  // After a rotation the previous nonce is still accepted, an older one is not.
  await control(base, { rotate_nonce: true });
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1', { nonce })).status, 200);
  await control(base, { rotate_nonce: true });
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1', { nonce })).status, 401);
});

test('scopes and roles: insufficient_scope challenge, then E0000006 from the admin role', async () => {
  const k = await makeDpopKey();
  const t = await getToken(base, readOnlyClient, k, 'okta.users.read');
  const res = await api(base, t, k, 'POST', '/api/v1/users?activate=true', { body: { profile: { login: 'x@example.com' } } });
  assert.equal(res.status, 403);
  assert.equal(res.body, '');
  assert.equal(challengeOf(res).scope, 'okta.users.manage');
  assert.equal(challengeOf(res).error_description, 'The access token provided does not contain the required scopes.');
  assert.equal((await api(base, t, k, 'GET', '/api/v1/groups')).status, 403);

  const ro = await getToken(base, roAdminClient, k);
  assert.equal((await api(base, ro, k, 'GET', '/api/v1/users?limit=1')).status, 200);
  const write = await api(base, ro, k, 'POST', '/api/v1/users', { body: { profile: { login: 'ro@example.com' } } });
  assert.equal(write.status, 403);
  assert.deepEqual({ ...write.json, errorId: 'x' }, {
    errorCode: 'E0000006', errorSummary: 'You do not have permission to perform the requested action',
    errorLink: 'E0000006', errorId: 'x', errorCauses: [],
  });
  assert.match(write.json.errorId, /^oae[A-Za-z0-9]{22}$/);
  assert.equal(write.headers['www-authenticate'], undefined);

  const ga = await getToken(base, groupAdminClient, k);
  assert.equal((await api(base, ga, k, 'GET', '/api/v1/groups?limit=1')).status, 200);
  assert.equal((await api(base, ga, k, 'GET', '/api/v1/apps')).json.errorCode, 'E0000006');
});

test('unknown path 404 E0000008, wrong method 405 E0000022', async () => {
  const unknown = await api(base, token, key, 'GET', '/api/v1/policies');
  assert.equal(unknown.status, 404);
  assert.equal(unknown.json.errorCode, 'E0000008');
  const method = await api(base, token, key, 'PATCH', '/api/v1/users');
  assert.equal(method.status, 405);
  assert.equal(method.json.errorCode, 'E0000022');
  assert.equal(method.headers.allow, 'GET, POST');
});

// ---------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------

test('pagination: 450 users in 3 pages of at most 200, two Link lines, Remaining counts down', async () => {
  const ids = new Set();
  let next = '/api/v1/users?limit=200';
  let pages = 0;
  const remaining = [];
  while (next) {
    const res = await api(base, token, key, 'GET', next);
    assert.equal(res.status, 200, res.body);
    pages++;
    for (const u of res.json) ids.add(u.id);
    const links = rawHeaderValues(res, 'link');
    assert.ok(links.some((l) => l.endsWith('rel="self"')));
    next = nextLink(res, base);
    if (next) assert.equal(links.length, 2);
    for (const h of ['x-okta-request-id', 'x-rate-limit-limit', 'x-rate-limit-remaining', 'x-rate-limit-reset', 'date']) {
      assert.ok(res.headers[h], h);
    }
    remaining.push(Number(res.headers['x-rate-limit-remaining']));
  }
  assert.equal(pages, 3);
  assert.equal(ids.size, 450);
  assert.ok([...ids].every((id) => /^00u\d{15}$/.test(id)));
  if (remaining[0] > remaining[2]) assert.deepEqual(remaining, [599, 598, 597]); // (unless a minute ended between)
});

test('get by id, login (percent-decoded htu) and shortname', async () => {
  const ok = await api(base, token, key, 'GET', '/api/v1/users/user7%40example.com',
    { htu: `${base}/api/v1/users/user7@example.com` });
  assert.equal(ok.status, 200, ok.body);
  assert.equal(ok.json.id, '00u000000000000007');
  assert.deepEqual(ok.json.credentials, { password: {}, provider: { type: 'OKTA', name: 'OKTA' } });
  const encoded = await api(base, token, key, 'GET', '/api/v1/users/user7%40example.com',
    { htu: `${base}/api/v1/users/user7%40example.com` });
  assert.equal(encoded.status, 400);
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users/USER8')).json.id, '00u000000000000008');
  const missing = await api(base, token, key, 'GET', '/api/v1/users/nobody%40example.com');
  assert.equal(missing.status, 404);
  assert.equal(missing.json.errorSummary, 'Not found: Resource not found: nobody@example.com (User)');
});

test('users: q, filter, search', async () => {
  const q = await api(base, token, key, 'GET', '/api/v1/users?q=user1');
  assert.equal(q.json.length, 10); // default limit with q
  assert.equal(nextLink(q, base), null); // q does not paginate
  assert.ok(q.json.every((u) => u.profile.login.startsWith('user1')));
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?q=Lovelace&limit=200')).json.length, 40); // 1-20, 401-420

  const enc = (s) => encodeURIComponent(s);
  const f = await api(base, token, key, 'GET', `/api/v1/users?limit=5&filter=${enc('status eq "ACTIVE"')}`);
  assert.equal(f.json.length, 5);
  assert.ok(rawHeaderValues(f, 'link').find((l) => l.includes('rel="next"')).includes('filter='));
  const login = await api(base, token, key, 'GET', `/api/v1/users?filter=${enc('profile.login eq "user42@example.com"')}`);
  assert.deepEqual(login.json.map((u) => u.id), ['00u000000000000042']);
  const recent = await api(base, token, key, 'GET',
    `/api/v1/users?filter=${enc('lastUpdated gt "2017-03-01T00:00:00Z" and lastUpdated lt "2017-03-05T00:00:00.000Z"')}`);
  assert.equal(recent.json.length, 4);
  const s = await api(base, token, key, 'GET', `/api/v1/users?search=${enc('profile.lastName sw "tur" and status eq "ACTIVE"')}`);
  assert.equal(s.json.length, 40);
  assert.ok(s.json.every((u) => u.profile.lastName === 'Turing'));

  const bad = await api(base, token, key, 'GET', `/api/v1/users?filter=${enc('profile.login co "user"')}`);
  assert.equal(bad.status, 400);
  assert.equal(bad.json.errorCode, 'E0000031');
  assert.equal(bad.json.errorSummary,
    'The supplied combination of operator and field is not currently supported. Operator: co, Field: profile.login');
  assert.equal((await api(base, token, key, 'GET', `/api/v1/users?search=${enc('status eq')}`)).json.errorCode, 'E0000031');
});

test('users: create (STAGED, PROVISIONED, ACTIVE), update, replace, delete twice', async () => {
  const stamp = Date.now();
  const mk = (query, body) => api(base, token, key, 'POST', `/api/v1/users${query}`, { body });
  const staged = await mk('?activate=false', { profile: { login: `staged.${stamp}@example.com` } });
  assert.equal(staged.status, 200, staged.body);
  assert.equal(staged.json.status, 'STAGED');
  const prov = await mk('', { profile: { login: `prov.${stamp}@example.com` } });
  assert.equal(prov.json.status, 'PROVISIONED');
  assert.equal(prov.json.credentials.password, undefined);
  const login = `new.${stamp}@example.com`;
  const created = await mk('?activate=true', {
    profile: { firstName: 'New', lastName: 'User', email: login, login, department: 'R&D' },
    credentials: { password: { value: 'Secr3t-value!' } }, groupIds: ['00g000000000000005'],
  });
  assert.equal(created.json.status, 'ACTIVE');
  assert.deepEqual(created.json.credentials.password, {});
  assert.ok(!created.body.includes('Secr3t'));
  const dup = await mk('', { profile: { login: login.toUpperCase() } });
  assert.equal(dup.status, 400);
  assert.equal(dup.json.errorSummary, 'Api validation failed: login');
  assert.equal(dup.json.errorCauses[0].errorSummary, 'login: An object with this field already exists in the current organization');
  const id = created.json.id;
  const groupsOf = await api(base, token, key, 'GET', `/api/v1/users/${id}/groups`);
  assert.deepEqual(groupsOf.json.map((g) => g.id), ['00g000000000000001', '00g000000000000005']);

  const upd = await api(base, token, key, 'POST', `/api/v1/users/${id}`, { body: { profile: { firstName: 'Renamed' } } });
  assert.equal(upd.json.profile.firstName, 'Renamed');
  assert.equal(upd.json.profile.department, 'R&D');
  const rep = await api(base, token, key, 'PUT', `/api/v1/users/${id}`, { body: { profile: { login, email: login } } });
  assert.equal(rep.json.profile.department, undefined);
  assert.equal(rep.json.profile.firstName, undefined);

  const del1 = await api(base, token, key, 'DELETE', `/api/v1/users/${id}`);
  assert.equal(del1.status, 204);
  assert.equal(del1.body, '');
  assert.equal((await api(base, token, key, 'GET', `/api/v1/users/${id}`)).json.status, 'DEPROVISIONED');
  const deprov = await api(base, token, key, 'POST', `/api/v1/users/${id}`, { body: { profile: { firstName: 'X' } } });
  assert.equal(deprov.status, 403);
  assert.equal(deprov.json.errorCode, 'E0000038');
  // The plain list leaves DEPROVISIONED users out; a filter finds them.
  const all = await api(base, token, key, 'GET', '/api/v1/users?limit=200&after=00u000000000000450');
  assert.ok(!all.json.some((u) => u.id === id));
  const f = await api(base, token, key, 'GET', `/api/v1/users?filter=${encodeURIComponent(`id eq "${id}"`)}`);
  assert.equal(f.json.length, 1);
  assert.equal((await api(base, token, key, 'DELETE', `/api/v1/users/${id}`)).status, 204);
  const gone = await api(base, token, key, 'GET', `/api/v1/users/${id}`);
  assert.equal(gone.status, 404);
  assert.equal(gone.json.errorCode, 'E0000007');
});

test('users: lifecycle transitions and Okta errors', async () => {
  const created = await api(base, token, key, 'POST', '/api/v1/users?activate=false',
    { body: { profile: { login: `life.${Date.now()}@example.com` }, credentials: { password: { value: 'pw-123456' } } } });
  const id = created.json.id;
  const lc = (op, query = '') => api(base, token, key, 'POST', `/api/v1/users/${id}/lifecycle/${op}${query}`);
  const status = async () => (await api(base, token, key, 'GET', `/api/v1/users/${id}`)).json.status;

  const susp = await lc('suspend');
  assert.equal(susp.status, 400);
  assert.equal(susp.json.errorCode, 'E0000001');
  const act = await lc('activate', '?sendEmail=false');
  assert.equal(act.status, 200);
  assert.match(act.json.activationUrl, /\/welcome\//);
  assert.equal(await status(), 'ACTIVE');
  const again = await lc('activate');
  assert.equal(again.status, 403);
  assert.equal(again.json.errorCode, 'E0000016');
  assert.deepEqual((await lc('suspend')).json, {});
  assert.equal(await status(), 'SUSPENDED');
  assert.deepEqual((await lc('unsuspend')).json, {});
  assert.equal((await lc('unsuspend')).json.errorCode, 'E0000001');

  const unlock = await lc('unlock');
  assert.equal(unlock.status, 403);
  assert.equal(unlock.json.errorCode, 'E0000032');
  assert.deepEqual(unlock.json.errorCauses, [{ errorSummary: 'The user is not locked out.' }]);
  await control(base, { user_status: { [id]: 'LOCKED_OUT' } });
  assert.equal((await lc('unlock')).status, 200);
  assert.equal(await status(), 'ACTIVE');

  const exp = await lc('expire_password');
  assert.equal(exp.json.status, 'PASSWORD_EXPIRED');
  assert.equal((await lc('expire_password_with_temp_password')).json.tempPassword.length, 12);
  const reset = await lc('reset_password', '?sendEmail=false');
  assert.match(reset.json.resetPasswordUrl, new RegExp(`^${base}/reset_password/\\w+$`));
  assert.equal(await status(), 'RECOVERY');
  assert.deepEqual((await lc('deactivate')).json, {});
  assert.equal((await lc('reset_password')).json.errorCode, 'E0000038');
  assert.equal((await lc('frobnicate')).status, 404);
});

test('factors: seeded deterministically, list, unenroll, reset_factors', async () => {
  const list = async (n) => (await api(base, token, key, 'GET', `/api/v1/users/00u${String(n).padStart(15, '0')}/factors`)).json;
  const f15 = await list(15);
  assert.deepEqual(f15.map((f) => f.factorType), ['push', 'token:software:totp', 'sms']);
  assert.deepEqual(f15.map((f) => f.id), ['opf000000000000015', 'uft000000000000015', 'mbl000000000000015']);
  assert.deepEqual(await list(2), []);
  assert.equal((await list(13))[0].status, 'PENDING_ACTIVATION');
  const del = await api(base, token, key, 'DELETE', '/api/v1/users/00u000000000000015/factors/uft000000000000015');
  assert.equal(del.status, 204);
  const again = await api(base, token, key, 'DELETE', '/api/v1/users/00u000000000000015/factors/uft000000000000015');
  assert.equal(again.status, 404);
  assert.equal(again.json.errorSummary, 'Not found: Resource not found: uft000000000000015 (UserFactor)');
  const rf = await api(base, token, key, 'POST', '/api/v1/users/00u000000000000015/lifecycle/reset_factors');
  assert.deepEqual(rf.json, {});
  assert.deepEqual(await list(15), []);
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users/00u000000000000015')).json.status, 'ACTIVE');
});

// ---------------------------------------------------------------------------
// Groups and apps
// ---------------------------------------------------------------------------

test('groups: paginate, q, search, filter, create, members', async () => {
  const g = await api(base, token, key, 'GET', '/api/v1/groups?limit=20');
  assert.equal(g.status, 200);
  assert.equal(g.json.length, 20);
  assert.equal(g.json[0].type, 'BUILT_IN');
  assert.ok(nextLink(g, base));
  assert.equal((await api(base, token, key, 'GET', '/api/v1/groups?q=group%202')).json.length, 11); // 2, 20-29
  const s = await api(base, token, key, 'GET', `/api/v1/groups?search=${encodeURIComponent('type eq "BUILT_IN"')}`);
  assert.deepEqual(s.json.map((x) => x.profile.name), ['Everyone']);

  const name = `Team ${Date.now()}`;
  const c = await api(base, token, key, 'POST', '/api/v1/groups', { body: { profile: { name, description: 'd' } } });
  assert.equal(c.status, 200);
  assert.equal(c.json.type, 'OKTA_GROUP');
  const dup = await api(base, token, key, 'POST', '/api/v1/groups', { body: { profile: { name } } });
  assert.equal(dup.json.errorCode, 'E0000001');
  const gid = c.json.id;
  assert.equal((await api(base, token, key, 'GET', `/api/v1/groups/${gid}`)).json.profile.name, name);

  const put = await api(base, token, key, 'PUT', `/api/v1/groups/${gid}/users/00u000000000000003`);
  assert.equal(put.status, 204);
  await api(base, token, key, 'PUT', `/api/v1/groups/${gid}/users/00u000000000000004`);
  assert.deepEqual((await api(base, token, key, 'GET', `/api/v1/groups/${gid}/users`)).json.map((u) => u.id),
    ['00u000000000000003', '00u000000000000004']);
  assert.equal((await api(base, token, key, 'DELETE', `/api/v1/groups/${gid}/users/00u000000000000003`)).status, 204);
  assert.equal((await api(base, token, key, 'GET', `/api/v1/groups/${gid}/users`)).json.length, 1);
  const members = await api(base, token, key, 'GET', '/api/v1/groups/00g000000000000030/users');
  assert.equal(members.json.length, 15);
  // a login is not a user id here, unlike on the Users API's own paths
  const byLogin = await api(base, token, key, 'PUT', `/api/v1/groups/${gid}/users/user5%40example.com`,
    { htu: `${base}/api/v1/groups/${gid}/users/user5@example.com` });
  assert.equal(byLogin.status, 404);
  assert.equal(byLogin.json.errorCode, 'E0000007');
  const everyone = await api(base, token, key, 'PUT', '/api/v1/groups/00g000000000000001/users/00u000000000000003');
  assert.equal(everyone.status, 400);
  const none = await api(base, token, key, 'GET', '/api/v1/groups/00gnothere/users');
  assert.equal(none.json.errorSummary, 'Not found: Resource not found: 00gnothere (UserGroup)');
});

test('apps: list, q, filter, get, users and groups, assign and unassign', async () => {
  const list = await api(base, token, key, 'GET', '/api/v1/apps');
  assert.equal(list.status, 200);
  assert.deepEqual(list.json.map((a) => a.name), ['saasure', 'okta_enduser', 'salesforce', 'slack', 'bookmark']);
  assert.equal((await api(base, token, key, 'GET', '/api/v1/apps?q=sales')).json[0].label, 'Salesforce.com');
  const inactive = await api(base, token, key, 'GET', `/api/v1/apps?filter=${encodeURIComponent('status eq "INACTIVE"')}`);
  assert.deepEqual(inactive.json.map((a) => a.name), ['bookmark']);
  const ofUser = await api(base, token, key, 'GET', `/api/v1/apps?filter=${encodeURIComponent('user.id eq "00u000000000000010"')}`);
  assert.deepEqual(ofUser.json.map((a) => a.name), ['salesforce', 'slack']);
  const two = await api(base, token, key, 'GET', `/api/v1/apps?filter=${encodeURIComponent('status eq "ACTIVE" and name eq "slack"')}`);
  assert.equal(two.status, 400);
  const missing = await api(base, token, key, 'GET', '/api/v1/apps/0oanothere');
  assert.equal(missing.json.errorSummary, 'Not found: Resource not found: 0oanothere (AppInstance)');

  const sf = '0oa000000000000003';
  assert.equal((await api(base, token, key, 'GET', `/api/v1/apps/${sf}`)).json.signOnMode, 'SAML_2_0');
  const au = await api(base, token, key, 'GET', `/api/v1/apps/${sf}/users?limit=500`);
  // every 10th user directly (45) and group 3's members (150) as GROUP, counted once
  assert.equal(au.json.length, 45 + 150 - 15);
  assert.equal(au.json.find((x) => x.id === '00u000000000000030').scope, 'USER');
  assert.equal(au.json.find((x) => x.id === '00u000000000000003').scope, 'GROUP');
  assert.equal((await api(base, token, key, 'GET', `/api/v1/apps/${sf}/users`)).json.length, 50); // default limit

  const assign = await api(base, token, key, 'POST', `/api/v1/apps/${sf}/users`, { body: { id: '00u000000000000001', scope: 'USER' } });
  assert.equal(assign.status, 200);
  assert.equal(assign.json.scope, 'USER');
  assert.equal(assign.json.credentials.userName, 'user1@example.com');
  assert.equal((await api(base, token, key, 'DELETE', `/api/v1/apps/${sf}/users/00u000000000000001`)).status, 204);
  assert.equal((await api(base, token, key, 'DELETE', `/api/v1/apps/${sf}/users/00u000000000000001`)).status, 404);

  const wiki = '0oa000000000000005';
  const ag = await api(base, token, key, 'PUT', `/api/v1/apps/${wiki}/groups/00g000000000000007`, { body: { priority: 2 } });
  assert.equal(ag.status, 200);
  assert.equal(ag.json.id, '00g000000000000007');
  assert.equal(ag.json.priority, 2);
  assert.deepEqual((await api(base, token, key, 'GET', `/api/v1/apps/${wiki}/groups`)).json.map((x) => x.id), ['00g000000000000007']);
  assert.equal((await api(base, token, key, 'GET', `/api/v1/apps/${wiki}/users?limit=500`)).json.length, 64);
  assert.equal((await api(base, token, key, 'DELETE', `/api/v1/apps/${wiki}/groups/00g000000000000007`)).status, 204);
  assert.deepEqual((await api(base, token, key, 'GET', `/api/v1/apps/${wiki}/groups`)).json, []);
});

// ---------------------------------------------------------------------------
// System Log
// ---------------------------------------------------------------------------

test('logs: polling always has a next link that resumes after the last event', async () => {
  const first = await api(base, token, key, 'GET', '/api/v1/logs?limit=20');
  assert.equal(first.status, 200);
  assert.equal(first.json.length, 20);
  const ev = first.json[0];
  for (const k of ['uuid', 'published', 'eventType', 'displayMessage', 'severity', 'actor', 'client', 'outcome', 'target',
    'transaction', 'debugContext']) assert.ok(k in ev, k);
  assert.deepEqual(Object.keys(ev.actor).sort(), ['alternateId', 'detailEntry', 'displayName', 'id', 'type']);
  assert.ok(first.json.every((e, i) => i === 0 || e.published >= first.json[i - 1].published));
  const seen = new Set(first.json.map((e) => e.uuid));
  let next = nextLink(first, base);
  const sizes = [];
  for (let i = 0; i < 3; i++) {
    const res = await api(base, token, key, 'GET', next);
    sizes.push(res.json.length);
    for (const e of res.json) { assert.ok(!seen.has(e.uuid)); seen.add(e.uuid); }
    next = nextLink(res, base);
    assert.ok(next, 'a polling page always links on');
  }
  assert.deepEqual(sizes, [20, 10, 0]);
  const emptyAgain = await api(base, token, key, 'GET', next);
  assert.equal(nextLink(emptyAgain, base), next); // the same position
  await control(base, { log_events: 3 });
  const fresh = await api(base, token, key, 'GET', next);
  assert.equal(fresh.json.length, 3);
  const after = await api(base, token, key, 'GET', nextLink(fresh, base));
  assert.deepEqual(after.json, []);
});

test('logs: bounded queries end without a next link; filter, q and errors', async () => {
  const now = new Date();
  const since = new Date(now - 2 * 3600000).toISOString();
  const until = now.toISOString();
  let next = `/api/v1/logs?since=${since}&until=${until}&limit=30`;
  const sizes = [];
  while (next) {
    const res = await api(base, token, key, 'GET', next);
    sizes.push(res.json.length);
    next = nextLink(res, base);
  }
  assert.equal(sizes[0], 30);
  assert.ok(sizes.reduce((a, b) => a + b) >= 50);
  const desc = await api(base, token, key, 'GET', `/api/v1/logs?since=${since}&until=${until}&sortOrder=DESCENDING&limit=5`);
  assert.ok(desc.json[0].published >= desc.json[4].published);

  const enc = encodeURIComponent;
  const f = await api(base, token, key, 'GET', `/api/v1/logs?limit=1000&filter=${enc('eventType eq "user.lifecycle.create"')}`);
  assert.ok(f.json.length >= 6);
  assert.ok(f.json.every((e) => e.eventType === 'user.lifecycle.create' && e.displayMessage === 'Create okta user'));
  const fail = await api(base, token, key, 'GET', `/api/v1/logs?filter=${enc('outcome.result eq "FAILURE" and severity eq "WARN"')}`);
  assert.ok(fail.json.length >= 6);
  const kw = await api(base, token, key, 'GET', '/api/v1/logs?q=membership&limit=1000');
  assert.ok(kw.json.length > 0 && kw.json.every((e) => /membership/.test(e.displayMessage)));

  const badOp = await api(base, token, key, 'GET', `/api/v1/logs?filter=${enc('display_message eqq "Create okta user"')}`);
  assert.equal(badOp.status, 400);
  assert.equal(badOp.json.errorSummary, "Invalid filter 'display_message eqq \"Create okta user\"': Unrecognized attribute " +
    "operator 'eqq' at position 16. Expected: eq,co,sw,pr,gt,ge,lt,le");
  const badDate = await api(base, token, key, 'GET', '/api/v1/logs?until=yesterday');
  assert.equal(badDate.json.errorCode, 'E0000001');
  assert.equal(badDate.json.errorCauses.length, 2);
  const old = new Date(Date.now() - 200 * 86400000).toISOString();
  assert.equal((await api(base, token, key, 'GET', `/api/v1/logs?since=${old}`)).json.errorCode, 'E0000053');
  assert.equal((await api(base, token, key, 'GET', `/api/v1/logs?q=${'x'.repeat(41)}`)).json.errorCode, 'E0000001');

  const k = await makeDpopKey();
  const noLogs = await getToken(base, dpopClient, k, 'okta.users.read');
  const denied = await api(base, noLogs, k, 'GET', '/api/v1/logs');
  assert.equal(denied.status, 403);
  assert.equal(challengeOf(denied).scope, 'okta.logs.read');
});

// ---------------------------------------------------------------------------
// Rate limits and concurrency
// ---------------------------------------------------------------------------

test('rate limits: Workforce buckets and headers per endpoint family', async () => {
  await awayFromMinuteEdge();
  const limitOf = async (method, p, body) => {
    const res = await api(base, token, key, method, p, { body });
    assert.ok(res.status < 300, `${method} ${p}: ${res.status} ${res.body}`);
    const reset = Number(res.headers['x-rate-limit-reset']);
    assert.equal(reset % 60, 0);
    assert.ok(reset > Date.now() / 1000 && reset <= Date.now() / 1000 + 60);
    return Number(res.headers['x-rate-limit-limit']);
  };
  const u = '00u000000000000011';
  assert.equal(await limitOf('GET', '/api/v1/users?limit=1'), 600);
  assert.equal(await limitOf('GET', `/api/v1/users/${u}`), 2000);
  assert.equal(await limitOf('POST', `/api/v1/users/${u}`, { profile: {} }), 600);
  assert.equal(await limitOf('GET', `/api/v1/users/${u}/factors`), 1200);
  assert.equal(await limitOf('GET', '/api/v1/groups?limit=1'), 500);
  assert.equal(await limitOf('GET', '/api/v1/groups/00g000000000000002'), 1000);
  assert.equal(await limitOf('GET', '/api/v1/groups/00g000000000000002/users?limit=1'), 1200);
  assert.equal(await limitOf('GET', '/api/v1/apps'), 100);
  assert.equal(await limitOf('GET', '/api/v1/apps/0oa000000000000001'), 500);
  assert.equal(await limitOf('GET', '/api/v1/apps/0oa000000000000003/users?limit=1'), 100); // apps/{id}/* is apps'
  assert.equal(await limitOf('GET', '/api/v1/logs?limit=1'), 120);
  const t = await tokenResponse(base, dpopClient, await makeDpopKey(), 'okta.users.read');
  assert.equal(t.headers['x-rate-limit-limit'], '2000');
  assert.equal((await request(`${base}/oauth2/v1/keys`)).headers['x-rate-limit-limit'], undefined); // unlimited
  const stats = await getStats(base);
  assert.equal(stats.buckets['GET /api/v1/users/{id}'].peak_used, 1);
  assert.equal(stats.buckets['/api/v1'].peak_used, 2);
  assert.equal(stats.buckets['/api/v1/apps'].peak_used, 2);
  assert.equal(stats.buckets['/oauth2'].peak_used_by_client[dpopClient.clientId], 2);
});

test('rate limits: enforced per bucket, per-app share, a 429 uses up the proof', async () => {
  await awayFromMinuteEdge();
  const k = await makeDpopKey();
  const other = await getToken(base, roAdminClient, k);
  await control(base, { rate_limits: { '/api/v1/groups': 4 } });
  const g = (t, kk) => api(base, t, kk, 'GET', '/api/v1/groups?limit=1');
  assert.deepEqual([(await g(token, key)).headers['x-rate-limit-remaining'], (await g(token, key)).headers['x-rate-limit-remaining']],
    ['3', '2']);
  // Third call of the same app: its 50% share is used up; the headers show the whole bucket.
  const share = await g(token, key);
  assert.equal(share.status, 429);
  assert.equal(share.json.errorCode, 'E0000047');
  assert.equal(share.json.errorSummary, 'API call exceeded rate limit due to too many requests.');
  assert.equal(share.headers['x-rate-limit-limit'], '4');
  assert.equal(share.headers['x-rate-limit-remaining'], '2');
  assert.equal((await g(other, k)).status, 200);
  assert.equal((await g(other, k)).headers['x-rate-limit-remaining'], '0');
  const full = await g(other, k);
  assert.equal(full.status, 429);
  assert.equal(full.headers['x-rate-limit-remaining'], '0');

  // The proof of a 429 is used up (okta-sdk-golang#554): resending it fails.
  const p = await proof(key, { htm: 'GET', htu: `${base}/api/v1/groups`, accessToken: token });
  const headers = { Authorization: `DPoP ${token}`, DPoP: p };
  assert.equal((await request(`${base}/api/v1/groups?limit=1`, { headers })).status, 429);
  await control(base, { rate_limits: {} });
  const resent = await request(`${base}/api/v1/groups?limit=1`, { headers });
  assert.equal(resent.status, 400);
  assert.equal(challengeOf(resent).error_description, 'The DPoP proof JWT has already been used.');

  const stats = await getStats(base);
  assert.equal(stats.count_429, 3);
  assert.equal(stats.buckets['/api/v1/groups'].limit, 500);
  assert.equal(stats.buckets['/api/v1/groups'].peak_used, 5);
  assert.deepEqual(stats.buckets['/api/v1/groups'].peak_used_by_client, { [dpopClient.clientId]: 3, [roAdminClient.clientId]: 2 });
  await request(`${base}/__emulator/reset`, { method: 'POST' });
  const cleared = await getStats(base);
  assert.equal(cleared.in_flight_peak, 0); // every answered request has left
  assert.equal(cleared.count_429, 0);
  assert.equal(cleared.buckets['/api/v1/groups'].peak_used, 0);
});

test('concurrency limit and latency_ms: 429 with 0/0/now+1 past the limit', async () => {
  await control(base, { concurrency_limit: 3, latency_ms: 400 });
  const t0 = Date.now();
  const all = await Promise.all([1, 2, 3, 4, 5].map(() => api(base, token, key, 'GET', '/api/v1/groups?limit=1')));
  const statuses = all.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
  assert.ok(Date.now() - t0 >= 400);
  const refused = all.find((r) => r.status === 429);
  assert.equal(refused.headers['x-rate-limit-limit'], '0');
  assert.equal(refused.headers['x-rate-limit-remaining'], '0');
  const reset = Number(refused.headers['x-rate-limit-reset']) - Date.now() / 1000;
  assert.ok(reset > -1 && reset <= 2, String(reset));
  assert.equal(refused.json.errorCode, 'E0000047');
  const stats = await getStats(base);
  assert.equal(stats.in_flight_peak, 3);
  assert.equal(stats.count_429, 2);
  await control(base, { concurrency_limit: 75, latency_ms: 0 });
  const ev = await api(base, token, key, 'GET', `/api/v1/logs?filter=${encodeURIComponent('eventType eq "core.concurrency.org.limit.violation"')}`);
  assert.equal(ev.json.length, 1); // only the first violation in 60 s is logged
  assert.equal(ev.json[0].displayMessage, 'Too many requests in flight');
});

test('rate_window_seconds: each window starts at its first request and Reset is its real end', async () => {
  await control(base, { rate_window_seconds: 2, rate_limits: { '/api/v1/groups': 3 }, app_share: 1 });
  const g = async () => {
    const before = Math.floor(Date.now() / 1000);
    const res = await api(base, token, key, 'GET', '/api/v1/groups?limit=1');
    return { res, before, after: Math.floor(Date.now() / 1000), reset: Number(res.headers['x-rate-limit-reset']),
      remaining: res.headers['x-rate-limit-remaining'] };
  };
  // Two windows with an idle gap between them: each one's Reset is the second of its first
  // request plus 2, wherever that falls on the clock.
  for (let round = 0; round < 2; round++) {
    const first = await g();
    assert.equal(first.res.status, 200);
    assert.ok(first.reset >= first.before + 2 && first.reset <= first.after + 2, JSON.stringify(first));
    assert.equal(first.remaining, '2');
    assert.deepEqual([(await g()).remaining, (await g()).remaining], ['1', '0']);
    const over = await g();
    assert.equal(over.res.status, 429);
    assert.equal(over.reset, first.reset);
    assert.equal(over.remaining, '0');
    // Right after the reported reset the bucket is open again, with a new window.
    await sleep(first.reset * 1000 - Date.now() + 20);
    const next = await g();
    assert.equal(next.res.status, 200);
    assert.equal(next.remaining, '2');
    assert.ok(next.reset >= first.reset + 2, JSON.stringify(next));
    await sleep(next.reset * 1000 - Date.now() + 1300); // idle past the end: no window runs meanwhile
  }
  const stats = await getStats(base);
  assert.equal(stats.buckets['/api/v1/groups'].windows, 4);
  assert.equal(stats.buckets['/api/v1/groups'].count_429, 2);
  assert.equal(stats.buckets['/api/v1/groups'].peak_used, 3);
  // Back to wall-clock minutes.
  await control(base, { rate_window_seconds: null });
  const minute = Number((await api(base, token, key, 'GET', '/api/v1/groups?limit=1')).headers['x-rate-limit-reset']);
  assert.equal(minute % 60, 0);
});

test('other_apps_use: counted in every window, in Remaining and against the limit', async () => {
  await control(base, { rate_limits: { '/api/v1/groups': 10, '/api/v1/users': 10 }, app_share: 1,
    other_apps_use: { '/api/v1/groups': 6, '/api/v1/users': 0.3 } });
  const g = () => api(base, token, key, 'GET', '/api/v1/groups?limit=1');
  const seen = [];
  for (let i = 0; i < 5; i++) { const r = await g(); seen.push([r.status, r.headers['x-rate-limit-remaining']]); }
  assert.deepEqual(seen, [[200, '3'], [200, '2'], [200, '1'], [200, '0'], [429, '0']]);
  const u = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(u.headers['x-rate-limit-remaining'], '6'); // 10 - 3 (30 %) - 1
  // A fraction alone: that share of every bucket; a change counts at once, in this window too.
  await control(base, { other_apps_use: 0.5 });
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1')).headers['x-rate-limit-remaining'], '3');
  await control(base, { other_apps_use: { '/api/v1/users': 10 } });
  const full = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(full.status, 429);
  assert.equal(full.json.errorCode, 'E0000047');
  const stats = await getStats(base);
  assert.equal(stats.buckets['/api/v1/groups'].peak_used, 4); // this org's own requests only
  assert.equal(stats.buckets['/api/v1/groups'].other_apps_use, 0);
  assert.equal(stats.buckets['/api/v1/users'].other_apps_use, 10);
  assert.equal(stats.buckets['/api/v1/groups'].count_429, 1);
  assert.equal(stats.buckets['/api/v1/users'].count_429, 1);
  await control(base, { other_apps_use: {} });
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1')).status, 200);
});

test('app shares below 40 %: app_share, and app_shares per client', async () => {
  const k = await makeDpopKey();
  const other = await getToken(base, roAdminClient, k);
  await control(base, { rate_limits: { '/api/v1/groups': 8 }, app_share: 0.25 });
  const g = (t, kk) => api(base, t, kk, 'GET', '/api/v1/groups?limit=1');
  assert.deepEqual([(await g(token, key)).status, (await g(token, key)).status], [200, 200]);
  const refused = await g(token, key); // 2 = 25 % of 8: the third is over this app's share
  assert.equal(refused.status, 429);
  assert.equal(refused.headers['x-rate-limit-remaining'], '6'); // the headers show the whole bucket
  assert.equal((await g(other, k)).status, 200);
  // One app's own share (here 12.5 %, 1 of 8) over the org's; the other keeps app_share.
  await request(`${base}/__emulator/reset`, { method: 'POST' });
  const st = (await control(base, { app_share: 0.5, app_shares: { [dpopClient.clientId]: 0.125 } })).json;
  assert.deepEqual(st.app_shares, { [dpopClient.clientId]: 0.125 });
  assert.deepEqual([(await g(token, key)).status, (await g(token, key)).status], [200, 429]);
  const others = [];
  for (let i = 0; i < 5; i++) others.push((await g(other, k)).status);
  assert.deepEqual(others, [200, 200, 200, 200, 429]);
  const stats = await getStats(base);
  assert.deepEqual(stats.buckets['/api/v1/groups'].peak_used_by_client, { [dpopClient.clientId]: 1, [roAdminClient.clientId]: 4 });
  await control(base, { app_shares: {} });
  assert.deepEqual((await request(`${base}/__emulator/state`)).json.app_shares, {});
});

test('rate_limit_headers = false: no X-Rate-Limit-* on any answer, the limits still apply', async () => {
  await control(base, { rate_limit_headers: false, rate_limits: { '/api/v1/groups': 2 }, app_share: 1 });
  const noRateHeaders = (res) => assert.deepEqual(Object.keys(res.headers).filter((h) => h.startsWith('x-rate-limit-')), [],
    `${res.status}: ${JSON.stringify(res.headers)}`);
  const g = () => api(base, token, key, 'GET', '/api/v1/groups?limit=1');
  const ok1 = await g();
  const ok2 = await g();
  const over = await g();
  assert.deepEqual([ok1.status, ok2.status, over.status], [200, 200, 429]);
  assert.equal(over.json.errorCode, 'E0000047');
  for (const r of [ok1, ok2, over]) noRateHeaders(r);
  noRateHeaders(await tokenResponse(base, dpopClient, await makeDpopKey(), 'okta.users.read'));
  await control(base, { faults: [{ path_prefix: '/api/v1/users', kind: 'rate_limit' }, { path_prefix: '/api/v1/users', kind: 'concurrency' }] });
  for (let i = 0; i < 2; i++) {
    const faulted = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
    assert.equal(faulted.status, 429);
    noRateHeaders(faulted);
  }
  await control(base, { rate_limit_headers: true });
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1')).headers['x-rate-limit-limit'], '600');
});

test('apps bucket: /api/v1/apps/{id}/* counts with /api/v1/apps; apps_subpath_bucket restores the old rule', async () => {
  await awayFromMinuteEdge();
  const sf = '0oa000000000000003';
  const rl = (res) => [res.status, res.headers['x-rate-limit-limit'], res.headers['x-rate-limit-remaining']];
  assert.deepEqual(rl(await api(base, token, key, 'GET', '/api/v1/apps')), [200, '100', '99']);
  assert.deepEqual(rl(await api(base, token, key, 'GET', `/api/v1/apps/${sf}/users?limit=1`)), [200, '100', '98']);
  assert.deepEqual(rl(await api(base, token, key, 'GET', `/api/v1/apps/${sf}/groups`)), [200, '100', '97']);
  const assign = await api(base, token, key, 'POST', `/api/v1/apps/${sf}/users`, { body: { id: '00u000000000000001', scope: 'USER' } });
  assert.deepEqual(rl(assign), [200, '100', '96']);
  assert.deepEqual(rl(await api(base, token, key, 'DELETE', `/api/v1/apps/${sf}/users/00u000000000000001`)), [204, '100', '95']);
  assert.deepEqual(rl(await api(base, token, key, 'GET', `/api/v1/apps/${sf}`)), [200, '500', '499']); // apps/{id} only
  // Over the apps limit (5 used of 4), its subpaths are refused too.
  await control(base, { rate_limits: { '/api/v1/apps': 4 } });
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await api(base, token, key, 'GET', `/api/v1/apps/${sf}/users?limit=1`)).status);
  assert.deepEqual(statuses, [429, 429, 429]);
  let stats = await getStats(base);
  assert.equal(stats.buckets['/api/v1/apps'].peak_used, 5);
  assert.equal(stats.buckets['/api/v1'].peak_used, 0);
  await control(base, { apps_subpath_bucket: '/api/v1', rate_limits: {} });
  assert.deepEqual(rl(await api(base, token, key, 'GET', `/api/v1/apps/${sf}/users?limit=1`)), [200, '1200', '1199']);
  stats = await getStats(base);
  assert.equal(stats.buckets['/api/v1'].peak_used, 1);
});

test('faults: concurrency (429 with 0/0/now+reset_in) and invalid_token_json (401 E0000011, no challenge)', async () => {
  await control(base, { faults: [{ path_prefix: '/api/v1/users', kind: 'concurrency', reset_in: 3 },
    { path_prefix: '/api/v1/users', kind: 'invalid_token_json' }] });
  const now = Math.floor(Date.now() / 1000);
  const busy = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(busy.status, 429);
  assert.equal(busy.json.errorCode, 'E0000047');
  assert.deepEqual([busy.headers['x-rate-limit-limit'], busy.headers['x-rate-limit-remaining']], ['0', '0']);
  const reset = Number(busy.headers['x-rate-limit-reset']);
  assert.ok(reset >= now + 2 && reset <= now + 5, String(reset - now));

  const p = await proof(key, { htm: 'GET', htu: `${base}/api/v1/users`, accessToken: token });
  const headers = { Authorization: `DPoP ${token}`, DPoP: p };
  const bad = await request(`${base}/api/v1/users?limit=1`, { headers });
  assert.equal(bad.status, 401);
  assert.equal(bad.headers['www-authenticate'], undefined);
  assert.match(bad.headers['content-type'], /^application\/json/);
  assert.deepEqual(Object.keys(bad.json), ['errorCode', 'errorSummary', 'errorLink', 'errorId', 'errorCauses']);
  assert.deepEqual([bad.json.errorCode, bad.json.errorSummary, bad.json.errorLink, bad.json.errorCauses],
    ['E0000011', 'Invalid token provided', 'E0000011', []]);
  assert.match(bad.json.errorId, /^oae[A-Za-z0-9]{22}$/);
  // Its proof is used up like any fault's; a fresh one works (the token itself is fine).
  const resent = await request(`${base}/api/v1/users?limit=1`, { headers });
  assert.equal(challengeOf(resent).error_description, 'The DPoP proof JWT has already been used.');
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1')).status, 200);
  const log = await getLog(base);
  assert.deepEqual(log.map((e) => [e.status, e.fault]), [[429, 'concurrency'], [401, 'invalid_token_json'], [400, null], [200, null]]);
  const stats = await getStats(base);
  assert.equal(stats.concurrency_429, 1);
  assert.equal(stats.count_429, 1);
});

// ---------------------------------------------------------------------------
// Faults and control
// ---------------------------------------------------------------------------

test('rate_limit fault: 429 E0000047 with reset header, then normal again', async () => {
  await control(base, { faults: [{ path_prefix: '/api/v1/users', kind: 'rate_limit', reset_in: 7 }] });
  const now = Math.floor(Date.now() / 1000);
  const r1 = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(r1.status, 429);
  assert.equal(r1.json.errorCode, 'E0000047');
  assert.equal(r1.headers['x-rate-limit-limit'], '600');
  assert.equal(r1.headers['x-rate-limit-remaining'], '0');
  const reset = Number(r1.headers['x-rate-limit-reset']);
  assert.ok(reset >= now + 6 && reset <= now + 9, String(reset - now));
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1')).status, 200);
  const log = await getLog(base);
  assert.deepEqual(log.map((e) => [e.status, e.fault]), [[429, 'rate_limit'], [200, null]]);
});

test('faults: html502/504, not_json, next_off_origin, truncated, reset, delay, query_timeout, server_error', async () => {
  await control(base, {
    faults: [
      { path_prefix: '/api/v1/users', method: 'GET', kind: 'html502' },
      { path_prefix: '/api/v1/users', kind: 'html504' },
      { path_prefix: '/api/v1/users', kind: 'not_json' },
      { path_prefix: '/api/v1/users', kind: 'next_off_origin' },
      { path_prefix: '/api/v1/users', kind: 'truncated' },
      { path_prefix: '/api/v1/users', kind: 'reset' },
      { path_prefix: '/api/v1/logs', kind: 'query_timeout' },
      { path_prefix: '/api/v1/groups', kind: 'server_error' },
    ],
  });
  const r502 = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(r502.status, 502);
  assert.match(r502.headers['content-type'], /text\/html/);
  const r504 = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(r504.status, 504);
  assert.match(r504.body, /Gateway Timeout/);
  const notJson = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(notJson.body, '<html>oops</html>');
  const evil = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.ok(rawHeaderValues(evil, 'link').some((l) => l.startsWith('<https://evil.example.com/') && l.endsWith('rel="next"')));
  await assert.rejects(api(base, token, key, 'GET', '/api/v1/users?limit=1'));
  await assert.rejects(api(base, token, key, 'GET', '/api/v1/users?limit=1'), /ECONNRESET|socket hang up/);
  const timeout = await api(base, token, key, 'GET', '/api/v1/logs');
  assert.equal(timeout.status, 500);
  assert.deepEqual(timeout.json, {
    errorCode: 'E0000009',
    errorSummary: "Your last request took too long to complete. This is likely due to a load issue on our side. We've logged " +
      'this and will work to address it. Please either simplify your query or wait a few minutes and try again.',
  });
  const e500 = await api(base, token, key, 'GET', '/api/v1/groups');
  assert.equal(e500.status, 500);
  assert.equal(e500.json.errorSummary, 'Internal Server Error');

  // A delayed request must not hold up others.
  await control(base, { faults: [{ path_prefix: '/api/v1/groups', kind: 'delay', delay_ms: 800 }] });
  const t0 = Date.now();
  const slow = api(base, token, key, 'GET', '/api/v1/groups?limit=1');
  const fast = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(fast.status, 200);
  assert.ok(Date.now() - t0 < 700, 'fast request was blocked');
  assert.equal((await slow).status, 200);
  assert.ok(Date.now() - t0 >= 800);
});

test('request log records DPoP, retry details and the HTTP version', async () => {
  const p = await proof(key, { htm: 'GET', htu: `${base}/api/v1/users`, accessToken: token, jti: 'log-test-jti' });
  await request(`${base}/api/v1/users?limit=2`, {
    headers: { Authorization: `DPoP ${token}`, DPoP: p, 'X-Okta-Retry-For': 'abc', 'X-Okta-Retry-Count': '1', 'User-Agent': 'oktadpop-test' },
  });
  const [e] = await getLog(base);
  assert.equal(e.kind, 'api');
  assert.equal(e.method, 'GET');
  assert.equal(e.path, '/api/v1/users');
  assert.equal(e.query, 'limit=2');
  assert.equal(e.status, 200);
  assert.equal(e.http_version, '1.1');
  assert.equal(e.has_dpop, true);
  assert.equal(e.proof_jti, 'log-test-jti');
  assert.equal(e.proof_nonce, null);
  assert.equal(e.auth_scheme, 'DPoP');
  assert.equal(e.retry_for, 'abc');
  assert.equal(e.retry_count, '1');
  assert.equal(e.user_agent, 'oktadpop-test');
  assert.equal(e.client_id, dpopClient.clientId);
});

test('control rejects unknown keys and bad values without changing anything', async () => {
  for (const body of [{ nope: 1 }, { rate_limits: { '/api/v2': 3 } }, { app_share: 0 }, { user_status: { '00u000000000000001': 'GONE' } },
    { faults: [{ path_prefix: '/x', kind: 'html500' }] }, { rs_nonce: true, latency_ms: -1 },
    { rate_window_seconds: 0 }, { rate_window_seconds: 1.5 }, { other_apps_use: 1 }, { other_apps_use: { '/api/v1/users': -1 } },
    { other_apps_use: { '/api/v9': 3 } }, { other_apps_use: { '/api/v1/users': 2.5 } }, { rate_limit_headers: 'no' },
    { app_shares: { x: 0 } }, { app_shares: { x: 1.5 } }, { apps_subpath_bucket: '/api/v1/apps/{id}' },
    { rs_nonce: true, rate_window_seconds: 5, other_apps_use: 'half' }]) {
    const res = await control(base, body);
    assert.equal(res.status, 400, JSON.stringify(body));
  }
  const st = (await request(`${base}/__emulator/state`)).json;
  assert.equal(st.rs_nonce, false);
  assert.equal(st.rate_window_seconds, null);
  assert.deepEqual(st.other_apps_use, {});
  assert.equal(st.rate_limit_headers, true);
  assert.equal(st.apps_subpath_bucket, '/api/v1/apps');
  assert.equal(st.rate_limits['/api/v1/users'], 600);
  assert.equal(st.log_events >= 50, true);
});

// ---------------------------------------------------------------------------
// Transport and command line
// ---------------------------------------------------------------------------

test('TLS: HTTP/2 for h2 clients, HTTP/1.1 for the others', { timeout: 15000 }, async (t) => {
  try { execFileSync('openssl', ['version']); } catch { t.skip('no openssl'); return; }
  const dir = path.join(tmpDir, 'tls');
  execFileSync('sh', [path.join(HERE, 'make-tls.sh'), dir]);
  const cfg = path.join(tmpDir, 'tls-config.json');
  fs.writeFileSync(cfg, JSON.stringify({ clients: [dpopClient.config], users: 3 }));
  const s = await startServer(cfg, ['--tls-cert', path.join(dir, 'server.pem'), '--tls-key', path.join(dir, 'server-key.pem')]);
  const ca = fs.readFileSync(path.join(dir, 'ca.pem'));
  const session = http2.connect(s.url, { ca });
  try {
    assert.match(s.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const k = await makeDpopKey();
    const htu = `${s.url}/oauth2/v1/token`;
    // The token flow over HTTP/1.1 (Node's https offers no ALPN), with the test CA pinned.
    let res;
    let nonce;
    for (let i = 0; i < 2; i++) {
      const body = new URLSearchParams(await tokenForm(dpopClient, s.url)).toString();
      const DPoP = await proof(k, { htm: 'POST', htu, nonce });
      res = await request(htu, { method: 'POST', ca, headers: { 'Content-Type': 'application/x-www-form-urlencoded', DPoP }, body });
      if (res.json.error !== 'use_dpop_nonce') break;
      nonce = res.headers['dpop-nonce'];
    }
    assert.equal(res.status, 200, res.body);
    await assert.rejects(request(`${s.url}/oauth2/v1/keys`), /self.signed|unable to verify|certificate/i);

    // HTTP/2: a token with the remembered nonce, API calls, two DPoP headers, faults.
    const form = new URLSearchParams(await tokenForm(dpopClient, s.url)).toString();
    const tok = await h2request(session, '/oauth2/v1/token', {
      method: 'POST', body: form,
      headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await proof(k, { htm: 'POST', htu, nonce }) },
    });
    assert.equal(tok.status, 200, tok.body);
    const at = tok.json.access_token;
    const apiHeaders = async () => ({
      authorization: `DPoP ${at}`, dpop: await proof(k, { htm: 'GET', htu: `${s.url}/api/v1/users`, accessToken: at }),
    });
    const users = await h2request(session, '/api/v1/users?limit=2', { headers: await apiHeaders() });
    assert.equal(users.status, 200);
    assert.equal(users.json.length, 2);
    assert.equal(users.headers['x-rate-limit-limit'], '600');
    const twice = { ...(await apiHeaders()) };
    twice.dpop = [twice.dpop, (await apiHeaders()).dpop];
    const two = await h2request(session, '/api/v1/users', { headers: twice });
    assert.equal(two.status, 400);
    assert.match(two.headers['www-authenticate'], /error_description="DPoP proof JWT cannot be parsed\."/);
    await request(`${s.url}/__emulator/control`, {
      method: 'POST', ca, headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ faults: [{ path_prefix: '/api/v1/users', kind: 'reset' }, { path_prefix: '/api/v1/users', kind: 'truncated' }] }),
    });
    await assert.rejects(h2request(session, '/api/v1/users', { headers: await apiHeaders() }), /stream/i);
    await assert.rejects(h2request(session, '/api/v1/users', { headers: await apiHeaders() }), /stream/i);
    // The session survives a reset stream.
    assert.equal((await h2request(session, '/api/v1/users', { headers: await apiHeaders() })).status, 200);

    const log = (await request(`${s.url}/__emulator/log`, { ca })).json;
    assert.deepEqual([...new Set(log.map((e) => e.http_version))].sort(), ['1.1', '2.0']);
    assert.equal(log.filter((e) => e.kind === 'api').every((e) => e.http_version === '2.0'), true);
  } finally {
    session.destroy();
    await stopServer(s);
  }
});

test('config: the pacing options from the config file, and bad values refused at start', async () => {
  const client = await makeClient('0oasmallshare000001', { scopes: ALL_SCOPE_LIST, extra: { app_share: 0.2 } });
  const cfg = path.join(tmpDir, 'pacing-config.json');
  fs.writeFileSync(cfg, JSON.stringify({ clients: [client.config], users: 5, rate_limit: 10, rate_window_seconds: 3,
    other_apps_use: { '/api/v1/users': 2 }, rate_limit_headers: false, apps_subpath_bucket: '/api/v1' }));
  const s = await startServer(cfg);
  try {
    const st = (await request(`${s.url}/__emulator/state`)).json;
    assert.deepEqual([st.rate_window_seconds, st.other_apps_use, st.rate_limit_headers, st.apps_subpath_bucket, st.app_shares],
      [3, { '/api/v1/users': 2 }, false, '/api/v1', { [client.clientId]: 0.2 }]);
    const k = await makeDpopKey();
    const t = await getToken(s.url, client, k);
    // 20 % of 10 is 2 for this app; no rate headers; the users window counts 2 of other apps' calls.
    const statuses = [];
    for (let i = 0; i < 3; i++) {
      const r = await api(s.url, t, k, 'GET', '/api/v1/users?limit=1');
      assert.equal(r.headers['x-rate-limit-limit'], undefined);
      statuses.push(r.status);
    }
    assert.deepEqual(statuses, [200, 200, 429]);
    const stats = (await request(`${s.url}/__emulator/stats`)).json;
    assert.equal(stats.buckets['/api/v1/users'].other_apps_use, 2);
    assert.equal(stats.buckets['/api/v1/users'].peak_used_by_client[client.clientId], 2);
  } finally {
    await stopServer(s);
  }
  for (const [bad, why] of [[{ rate_window_seconds: 0 }, /rate_window_seconds/], [{ other_apps_use: 1.5 }, /other_apps_use/],
    [{ rate_limit_headers: 'off' }, /rate_limit_headers/], [{ apps_subpath_bucket: '/x' }, /apps_subpath_bucket/],
    [{ clients: [{ ...client.config, app_share: 0 }] }, /app_share/]]) {
    fs.writeFileSync(cfg, JSON.stringify(bad));
    await assert.rejects(startServer(cfg), why);
  }
});

test('CLI: --ready-file, --clock-skew, rate_limit for every bucket, SIGTERM exits cleanly', async () => {
  const ready = path.join(tmpDir, 'ready.json');
  const cfg = path.join(tmpDir, 'cli-config.json');
  fs.writeFileSync(cfg, JSON.stringify({ users: 2, rate_limit: 7, rate_limits: { '/api/v1/logs': 3 }, clock_skew: 30 }));
  const s = await startServer(cfg, ['--ready-file', ready, '--clock-skew', '-120']);
  try {
    const info = JSON.parse(fs.readFileSync(ready, 'utf8'));
    assert.deepEqual({ port: info.port, url: info.url, pid: info.pid }, { port: s.port, url: s.url, pid: s.pid });
    const st = (await request(`${s.url}/__emulator/state`)).json;
    assert.equal(st.clock_skew, -120); // the command line wins
    assert.equal(st.rate_limits['/api/v1/users'], 7);
    assert.equal(st.rate_limits['/api/v1/logs'], 3);
    const res = await request(`${s.url}/api/v1/users`);
    assert.equal(res.headers['x-rate-limit-limit'], '7');
    const skew = Date.parse(res.headers.date) / 1000 - Date.now() / 1000;
    assert.ok(skew > -125 && skew < -115, String(skew));
    // Keep a connection open: shutdown must not wait for it.
    const agent = new http.Agent({ keepAlive: true });
    await request(`${s.url}/__emulator/users/count`, { agent }).then((r) => assert.equal(r.json.count, 2));
    const code = await new Promise((resolve) => {
      s.proc.removeAllListeners('exit');
      s.proc.on('exit', (c) => resolve(c));
      s.proc.kill('SIGTERM');
    });
    assert.equal(code, 0);
  } finally {
    await stopServer(s);
  }
});
