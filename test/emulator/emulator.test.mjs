// Tests for the Okta emulator: node --test (from test/emulator).
// The server runs as a child process, driven with jose-made client
// assertions and DPoP proofs, exactly as oktadpop would drive it.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as jose from 'jose';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SERVER = path.join(HERE, 'server.mjs');
const ALL_SCOPES = 'okta.users.read okta.users.manage okta.groups.read';

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

// Every value of a header, one per header line as sent.
function rawHeaderValues(res, name) {
  const values = [];
  for (let i = 0; i < res.rawHeaders.length; i += 2) {
    if (res.rawHeaders[i].toLowerCase() === name) values.push(res.rawHeaders[i + 1]);
  }
  return values;
}

async function makeClient(clientId, { alg = 'RS256', scopes, dpop = true } = {}) {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await jose.exportJWK(publicKey)), kid: `${clientId}-key`, alg };
  return { clientId, alg, privateKey, config: { client_id: clientId, jwks: { keys: [jwk] }, scopes, dpop_required: dpop } };
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

function tokenRequest(base, form, dpopProof) {
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  if (dpopProof) headers.DPoP = dpopProof;
  return request(`${base}/oauth2/v1/token`, { method: 'POST', headers, body: new URLSearchParams(form).toString() });
}

// The full client flow: first try without a nonce, then again with the nonce.
async function getToken(base, client, key, scope = ALL_SCOPES) {
  let nonce;
  for (let i = 0; i < 2; i++) {
    const form = {
      grant_type: 'client_credentials', scope,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await assertion(client, base),
    };
    const p = key ? await proof(key, { htm: 'POST', htu: `${base}/oauth2/v1/token`, nonce }) : undefined;
    const res = await tokenRequest(base, form, p);
    if (res.status === 400 && res.json.error === 'use_dpop_nonce') { nonce = res.headers['dpop-nonce']; continue; }
    assert.equal(res.status, 200, res.body);
    return res.json.access_token;
  }
  throw new Error('no token after nonce retry');
}

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

// ---------------------------------------------------------------------------
// Fixture: one server for the whole file, reset before each test
// ---------------------------------------------------------------------------

let srv;
let base;
let dpopClient;
let bearerClient;
let readOnlyClient;
let key; // the DPoP key of the main client
let token; // a DPoP-bound token with all scopes (fetched once)
let tmpDir;

before(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'okta-emu-test-'));
  dpopClient = await makeClient('0oadpop000000000001');
  bearerClient = await makeClient('0oabearer0000000001', { alg: 'ES256', dpop: false });
  readOnlyClient = await makeClient('0oaread00000000001', { scopes: ['okta.users.read'] });
  const cfg = path.join(tmpDir, 'config.json');
  fs.writeFileSync(cfg, JSON.stringify({
    clients: [dpopClient.config, bearerClient.config, readOnlyClient.config], users: 450, groups: 30,
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
  await control(base, { rs_nonce: false });
});

// ---------------------------------------------------------------------------
// Authorization server
// ---------------------------------------------------------------------------

test('token flow: use_dpop_nonce first, then a DPoP-bound token', async () => {
  const k = await makeDpopKey('RS256');
  const form = async () => ({
    grant_type: 'client_credentials', scope: 'okta.users.read',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await assertion(dpopClient, base),
  });
  const htu = `${base}/oauth2/v1/token`;
  const r1 = await tokenRequest(base, await form(), await proof(k, { htm: 'POST', htu }));
  assert.equal(r1.status, 400);
  assert.deepEqual(r1.json, { error: 'use_dpop_nonce', error_description: 'Authorization server requires nonce in DPoP proof.' });
  const nonce = r1.headers['dpop-nonce'];
  assert.ok(nonce);

  const r2 = await tokenRequest(base, await form(), await proof(k, { htm: 'POST', htu, nonce }));
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

test('client assertion jti replay is rejected (even after use_dpop_nonce)', async () => {
  const k = await makeDpopKey();
  const htu = `${base}/oauth2/v1/token`;
  const form = {
    grant_type: 'client_credentials', scope: 'okta.users.read',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await assertion(dpopClient, base),
  };
  const r1 = await tokenRequest(base, form, await proof(k, { htm: 'POST', htu }));
  assert.equal(r1.json.error, 'use_dpop_nonce');
  const r2 = await tokenRequest(base, form, await proof(k, { htm: 'POST', htu, nonce: r1.headers['dpop-nonce'] }));
  assert.equal(r2.status, 400);
  assert.equal(r2.json.error, 'invalid_client');
  assert.match(r2.json.error_description, /already been used/);
});

test('token endpoint rejects bad htu, missing proof, bad scope, wrong aud', async () => {
  const k = await makeDpopKey();
  const nonceRes = await tokenRequest(base, {}, undefined);
  assert.equal(nonceRes.status, 400); // no grant_type
  const form = async (extra = {}) => ({
    grant_type: 'client_credentials', scope: 'okta.users.read',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await assertion(dpopClient, base), ...extra,
  });
  const bad = await tokenRequest(base, await form(), await proof(k, { htm: 'POST', htu: `${base}/oauth2/default/v1/token` }));
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error, 'invalid_dpop_proof');
  assert.match(bad.json.error_description, /htu/);

  const missing = await tokenRequest(base, await form(), undefined);
  assert.deepEqual(missing.json, { error: 'invalid_dpop_proof', error_description: 'DPoP proof is missing' });

  const scope = await tokenRequest(base, await form({ scope: 'okta.apps.manage' }), undefined);
  assert.equal(scope.json.error, 'invalid_scope');

  const aud = await tokenRequest(base, {
    ...(await form()),
    client_assertion: await assertion(dpopClient, base, { aud: 'https://elsewhere.example/oauth2/v1/token' }),
  });
  assert.equal(aud.json.error, 'invalid_client');

  const hs = await new jose.SignJWT({ jti: 'x', htm: 'POST', htu: `${base}/oauth2/v1/token`, iat: Math.floor(Date.now() / 1000) })
    .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: 'c2VjcmV0' } })
    .sign(new TextEncoder().encode('secret-secret-secret-secret-secret'));
  const hsRes = await tokenRequest(base, await form(), hs);
  assert.equal(hsRes.json.error, 'invalid_dpop_proof');
});

test('non-DPoP client gets a Bearer token that works with the Bearer scheme', async () => {
  const t = await getToken(base, bearerClient, null, 'okta.users.read');
  const res = await request(`${base}/api/v1/users/00u000000000000001`, { headers: { Authorization: `Bearer ${t}` } });
  assert.equal(res.status, 200);
  assert.equal(res.json.profile.login, 'user1@example.com');
});

test('proof checks: two DPoP headers, private jwk, wrong typ, stale iat, wrong htm', async () => {
  const htu = `${base}/api/v1/users`;
  const send = (dpop) => request(`${base}/api/v1/users?limit=1`, { headers: { Authorization: `DPoP ${token}`, DPoP: dpop } });
  const desc = async (dpop) => (await send(dpop)).json.error_description;

  const p1 = await proof(key, { htm: 'GET', htu, accessToken: token });
  const p2 = await proof(key, { htm: 'GET', htu, accessToken: token });
  assert.match(await desc([p1, p2]), /exactly one/);

  const privateJwk = await jose.exportJWK(key.privateKey);
  assert.match(await desc(await proof(key, { htm: 'GET', htu, accessToken: token, jwk: privateJwk })), /public key/);
  assert.match(await desc(await proof(key, { htm: 'GET', htu, accessToken: token, typ: 'JWT' })), /typ/);
  const old = Math.floor(Date.now() / 1000) - 120;
  assert.match(await desc(await proof(key, { htm: 'GET', htu, accessToken: token, iat: old })), /iat/);
  assert.match(await desc(await proof(key, { htm: 'POST', htu, accessToken: token })), /htm/);
  assert.equal((await send(await proof(key, { htm: 'GET', htu, accessToken: token }))).status, 200);
});

// ---------------------------------------------------------------------------
// Resource server
// ---------------------------------------------------------------------------

test('API: missing token, Bearer scheme with a DPoP token, expired token', async () => {
  const none = await request(`${base}/api/v1/users`);
  assert.equal(none.status, 401);
  assert.match(none.headers['www-authenticate'], /^DPoP algs="/);
  assert.equal(none.json.errorCode, 'E0000011');

  const bearer = await request(`${base}/api/v1/users`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(bearer.status, 401);
  assert.equal(bearer.headers['www-authenticate'],
    'DPoP error="invalid_token", error_description="DPoP-bound access token used with Bearer scheme"');

  const t = await getToken(base, dpopClient, key, 'okta.users.read');
  await control(base, { expire_tokens: true });
  const expired = await api(base, t, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(expired.status, 401);
  assert.equal(expired.headers['www-authenticate'], 'DPoP error="invalid_token", error_description="The access token is invalid."');
  await request(`${base}/__emulator/reset`, { method: 'POST' }); // un-revoke the shared token
});

test('API: ath mismatch, cnf.jkt mismatch, jti replay, query in htu', async () => {
  const athBad = await api(base, token, key, 'GET', '/api/v1/users?limit=1', { proofOverrides: { accessToken: 'other' } });
  assert.equal(athBad.status, 400);
  assert.equal(athBad.json.error, 'invalid_dpop_proof');
  assert.match(athBad.headers['www-authenticate'], /^DPoP error="invalid_dpop_proof", error_description=".*ath/);

  const otherKey = await makeDpopKey();
  const jktBad = await api(base, token, otherKey, 'GET', '/api/v1/users?limit=1');
  assert.equal(jktBad.status, 400);
  assert.match(jktBad.json.error_description, /cnf\.jkt/);

  const p = await proof(key, { htm: 'GET', htu: `${base}/api/v1/users`, accessToken: token });
  const headers = { Authorization: `DPoP ${token}`, DPoP: p };
  assert.equal((await request(`${base}/api/v1/users?limit=1`, { headers })).status, 200);
  const replay = await request(`${base}/api/v1/users?limit=1`, { headers });
  assert.equal(replay.status, 400);
  assert.equal(replay.json.error_description, 'jti replayed');

  const q = await api(base, token, key, 'GET', '/api/v1/users?after=00u000000000000200',
    { htu: `${base}/api/v1/users?after=00u000000000000200` });
  assert.equal(q.status, 400);
  assert.match(q.json.error_description, /htu/);
});

test('pagination: 450 users in 3 pages of at most 200, two Link lines', async () => {
  const ids = new Set();
  let next = '/api/v1/users?limit=200';
  let pages = 0;
  while (next) {
    const res = await api(base, token, key, 'GET', next);
    assert.equal(res.status, 200, res.body);
    pages++;
    for (const u of res.json) ids.add(u.id);
    const links = rawHeaderValues(res, 'link');
    assert.ok(links.some((l) => l.endsWith('rel="self"')));
    const n = links.find((l) => l.endsWith('rel="next"'));
    next = n ? n.slice(1, n.indexOf('>')).slice(base.length) : null;
    if (next) assert.equal(links.length, 2);
    for (const h of ['x-okta-request-id', 'x-rate-limit-limit', 'x-rate-limit-remaining', 'x-rate-limit-reset', 'date']) {
      assert.ok(res.headers[h], h);
    }
  }
  assert.equal(pages, 3);
  assert.equal(ids.size, 450);
  assert.ok([...ids].every((id) => /^00u\d{15}$/.test(id)));
});

test('login lookup: htu is compared with the percent-decoded path', async () => {
  const ok = await api(base, token, key, 'GET', '/api/v1/users/user7%40example.com',
    { htu: `${base}/api/v1/users/user7@example.com` });
  assert.equal(ok.status, 200, ok.body);
  assert.equal(ok.json.id, '00u000000000000007');
  const encoded = await api(base, token, key, 'GET', '/api/v1/users/user7%40example.com',
    { htu: `${base}/api/v1/users/user7%40example.com` });
  assert.equal(encoded.status, 400);
  const missing = await api(base, token, key, 'GET', '/api/v1/users/nobody%40example.com');
  assert.equal(missing.status, 404);
  assert.equal(missing.json.errorCode, 'E0000007');
});

test('rs_nonce mode: 401 use_dpop_nonce with the RS nonce, then success', async () => {
  const state = (await control(base, { rs_nonce: true })).json;
  const r1 = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(r1.status, 401);
  assert.equal(r1.headers['www-authenticate'],
    'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"');
  const nonce = r1.headers['dpop-nonce'];
  assert.ok(nonce);
  assert.notEqual(nonce, state.as_nonce);
  const r2 = await api(base, token, key, 'GET', '/api/v1/users?limit=1', { nonce });
  assert.equal(r2.status, 200);
  // After a rotation the previous nonce is still accepted, an older one is not.
  await control(base, { rotate_nonce: true });
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1', { nonce })).status, 200);
  await control(base, { rotate_nonce: true });
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1', { nonce })).status, 401);
});

test('scopes: read-only client gets 403 E0000006 on POST users and groups', async () => {
  const k = await makeDpopKey();
  const t = await getToken(base, readOnlyClient, k, 'okta.users.read');
  const res = await api(base, t, k, 'POST', '/api/v1/users?activate=true', { body: { profile: { login: 'x@example.com' } } });
  assert.equal(res.status, 403);
  assert.equal(res.json.errorCode, 'E0000006');
  assert.equal((await api(base, t, k, 'GET', '/api/v1/groups')).status, 403);
});

test('users lifecycle: create, duplicate, deactivate, delete twice', async () => {
  const login = `new.${Date.now()}@example.com`;
  const created = await api(base, token, key, 'POST', '/api/v1/users?activate=true',
    { body: { profile: { firstName: 'New', lastName: 'User', email: login, login } } });
  assert.equal(created.status, 200, created.body);
  assert.equal(created.json.status, 'ACTIVE');
  const dup = await api(base, token, key, 'POST', '/api/v1/users?activate=true', { body: { profile: { login } } });
  assert.equal(dup.status, 400);
  assert.equal(dup.json.errorCode, 'E0000001');
  assert.match(dup.json.errorCauses[0].errorSummary, /already exists/);
  const noLogin = await api(base, token, key, 'POST', '/api/v1/users', { body: { profile: { email: 'a@b.c' } } });
  assert.equal(noLogin.json.errorCode, 'E0000001');

  const id = created.json.id;
  const deact = await api(base, token, key, 'POST', `/api/v1/users/${id}/lifecycle/deactivate`);
  assert.equal(deact.status, 200);
  assert.deepEqual(deact.json, {});
  assert.equal((await api(base, token, key, 'GET', `/api/v1/users/${id}`)).json.status, 'DEPROVISIONED');
  const del = await api(base, token, key, 'DELETE', `/api/v1/users/${id}`);
  assert.equal(del.status, 204);
  assert.equal(del.body, '');
  assert.equal((await api(base, token, key, 'GET', `/api/v1/users/${id}`)).status, 404);
});

test('groups paginate, unknown routes 404, filter works', async () => {
  const g = await api(base, token, key, 'GET', '/api/v1/groups?limit=20');
  assert.equal(g.status, 200);
  assert.equal(g.json.length, 20);
  assert.ok(rawHeaderValues(g, 'link').some((l) => l.includes('rel="next"')));
  const unknown = await api(base, token, key, 'GET', '/api/v1/apps');
  assert.equal(unknown.status, 404);
  assert.equal(unknown.json.errorCode, 'E0000022');
  const f = await api(base, token, key, 'GET', `/api/v1/users?limit=5&filter=${encodeURIComponent('status eq "ACTIVE"')}`);
  assert.equal(f.status, 200);
  assert.equal(f.json.length, 5);
  assert.ok(rawHeaderValues(f, 'link').find((l) => l.includes('rel="next"')).includes('filter='));
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
  assert.equal(r1.headers['x-rate-limit-remaining'], '0');
  const reset = Number(r1.headers['x-rate-limit-reset']);
  assert.ok(reset >= now + 6 && reset <= now + 9, String(reset - now));
  assert.equal((await api(base, token, key, 'GET', '/api/v1/users?limit=1')).status, 200);
  const log = await getLog(base);
  assert.deepEqual(log.map((e) => [e.status, e.fault]), [[429, 'rate_limit'], [200, null]]);
});

test('faults: html502, not_json, next_off_origin, truncated, reset, delay', async () => {
  await control(base, {
    faults: [
      { path_prefix: '/api/v1/users', method: 'GET', kind: 'html502' },
      { path_prefix: '/api/v1/users', kind: 'not_json' },
      { path_prefix: '/api/v1/users', kind: 'next_off_origin' },
      { path_prefix: '/api/v1/users', kind: 'truncated' },
      { path_prefix: '/api/v1/users', kind: 'reset' },
    ],
  });
  const r502 = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(r502.status, 502);
  assert.match(r502.headers['content-type'], /text\/html/);
  const notJson = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.equal(notJson.body, '<html>oops</html>');
  const evil = await api(base, token, key, 'GET', '/api/v1/users?limit=1');
  assert.ok(rawHeaderValues(evil, 'link').some((l) => l.startsWith('<https://evil.example.com/') && l.endsWith('rel="next"')));
  await assert.rejects(api(base, token, key, 'GET', '/api/v1/users?limit=1'));
  await assert.rejects(api(base, token, key, 'GET', '/api/v1/users?limit=1'), /ECONNRESET|socket hang up/);

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

test('request log records DPoP and retry details', async () => {
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
  assert.equal(e.has_dpop, true);
  assert.equal(e.proof_jti, 'log-test-jti');
  assert.equal(e.proof_nonce, null);
  assert.equal(e.auth_scheme, 'DPoP');
  assert.equal(e.retry_for, 'abc');
  assert.equal(e.retry_count, '1');
  assert.equal(e.user_agent, 'oktadpop-test');
});

test('TLS: serves https with a make-tls.sh certificate', { timeout: 10000 }, async (t) => {
  try { execFileSync('openssl', ['version']); } catch { t.skip('no openssl'); return; }
  const dir = path.join(tmpDir, 'tls');
  execFileSync('sh', [path.join(HERE, 'make-tls.sh'), dir]);
  const cfg = path.join(tmpDir, 'tls-config.json');
  fs.writeFileSync(cfg, JSON.stringify({ clients: [dpopClient.config], users: 3 }));
  const s = await startServer(cfg, ['--tls-cert', path.join(dir, 'server.pem'), '--tls-key', path.join(dir, 'server-key.pem')]);
  try {
    assert.match(s.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const ca = fs.readFileSync(path.join(dir, 'ca.pem'));
    const k = await makeDpopKey();
    // The token flow over https, with the test CA pinned.
    let res;
    let nonce;
    for (let i = 0; i < 2; i++) {
      const body = new URLSearchParams({
        grant_type: 'client_credentials', scope: 'okta.users.read',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await assertion(dpopClient, s.url),
      }).toString();
      const DPoP = await proof(k, { htm: 'POST', htu: `${s.url}/oauth2/v1/token`, nonce });
      res = await request(`${s.url}/oauth2/v1/token`,
        { method: 'POST', ca, headers: { 'Content-Type': 'application/x-www-form-urlencoded', DPoP }, body });
      if (res.json.error !== 'use_dpop_nonce') break;
      nonce = res.headers['dpop-nonce'];
    }
    assert.equal(res.status, 200, res.body);
    await assert.rejects(request(`${s.url}/oauth2/v1/keys`), /self.signed|unable to verify|certificate/i);
  } finally {
    await stopServer(s);
  }
});

test('CLI: --ready-file is written whole, SIGTERM exits cleanly', async () => {
  const ready = path.join(tmpDir, 'ready.json');
  const cfg = path.join(tmpDir, 'cli-config.json');
  fs.writeFileSync(cfg, JSON.stringify({ users: 2 }));
  const s = await startServer(cfg, ['--ready-file', ready]);
  try {
    const info = JSON.parse(fs.readFileSync(ready, 'utf8'));
    assert.deepEqual({ port: info.port, url: info.url, pid: info.pid }, { port: s.port, url: s.url, pid: s.pid });
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
