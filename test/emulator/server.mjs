#!/usr/bin/env node
// Strict Okta org emulator for oktadpop tests.
//
// Emulates the parts of an Okta org that oktadpop talks to:
//   * the org authorization server: POST /oauth2/v1/token with
//     client_credentials + private_key_jwt + DPoP (RFC 9449), GET /oauth2/v1/keys
//   * the management API (resource server): /api/v1/users, /api/v1/groups
//   * a test-only control API under /__emulator/ (request log, faults, nonces)
//
// It is deliberately strict: every check an Okta org makes (and a few RFC 9449
// ones) is enforced, so a client that passes here has no slack to lean on.
// All JOSE work (JWT/JWS verification, JWK import, thumbprints, signing) is
// done with the `jose` package; Node's http/https/crypto do the rest.
//
// Usage:
//   node server.mjs [--config CONFIG.json] [--port 0] [--host 127.0.0.1]
//                   [--tls-cert cert.pem --tls-key key.pem] [--base-url URL]
//                   [--ready-file PATH] [--watch-pid PID] [--verbose]
//
// --watch-pid PID: exit once process PID is gone (so a test run that dies
// without stopping the emulator does not leave it running).
//
// Nothing secret (tokens, assertions, proofs, keys) is ever written to
// stdout/stderr. stdout carries exactly one JSON "ready" line.

import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as jose from 'jose';

// ===========================================================================
// 1. Command line
// ===========================================================================

const USAGE = `usage: node server.mjs [--config CONFIG.json] [--port N] [--host 127.0.0.1]
                      [--tls-cert cert.pem --tls-key key.pem] [--base-url URL]
                      [--ready-file PATH] [--watch-pid PID] [--verbose]`;

function die(msg) {
  process.stderr.write(`okta-emulator: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const valued = {
    '--config': 'config',
    '--port': 'port',
    '--host': 'host',
    '--tls-cert': 'tlsCert',
    '--tls-key': 'tlsKey',
    '--base-url': 'baseUrl',
    '--ready-file': 'readyFile',
    '--watch-pid': 'watchPid',
  };
  const opts = { port: '0', host: '127.0.0.1', verbose: false };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    }
    if (arg === '--verbose') { opts.verbose = true; continue; }
    const key = valued[arg];
    if (!key) die(`unknown option ${arg}\n${USAGE}`);
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) die(`${arg} needs a value`);
    }
    opts[key] = value;
  }
  const port = Number(opts.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) die(`bad --port ${opts.port}`);
  opts.port = port;
  if (!!opts.tlsCert !== !!opts.tlsKey) die('--tls-cert and --tls-key go together');
  if (opts.watchPid !== undefined) {
    opts.watchPid = Number(opts.watchPid);
    if (!Number.isInteger(opts.watchPid) || opts.watchPid < 1) die('bad --watch-pid');
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const verbose = opts.verbose || process.env.OKTA_EMULATOR_VERBOSE === '1';

// ===========================================================================
// 2. Configuration
// ===========================================================================

const DEFAULT_SCOPES = ['okta.users.read', 'okta.users.manage', 'okta.groups.read'];
// Signing algorithms accepted for client assertions and DPoP proofs. Never
// "none" and never a MAC (HS*): both would let anyone forge them.
const ASYMMETRIC_ALGS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512'];
// JWK members that only a private (or symmetric) key has.
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

// lua-cjson encodes an empty Lua table as {}: accept that as an empty list.
function asArray(v) {
  if (Array.isArray(v)) return v;
  if (v && typeof v === 'object' && Object.keys(v).length === 0) return [];
  return null;
}

function loadConfig(file) {
  let raw = {};
  if (file) {
    try {
      raw = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      die(`cannot read config ${file}: ${e.message}`);
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) die('config must be a JSON object');
  const intOpt = (name, dflt, min) => {
    const v = raw[name] === undefined ? dflt : raw[name];
    if (!Number.isInteger(v) || v < min) die(`config.${name} must be an integer >= ${min}`);
    return v;
  };
  const clients = new Map();
  const clientList = asArray(raw.clients === undefined ? [] : raw.clients);
  if (!clientList) die('config.clients must be an array');
  for (const [i, c] of clientList.entries()) {
    if (!c || typeof c.client_id !== 'string' || !c.client_id) die(`config.clients[${i}].client_id missing`);
    const keys = c.jwks && asArray(c.jwks.keys);
    if (!keys || keys.length === 0) die(`config.clients[${i}].jwks.keys must be a non-empty array`);
    for (const k of keys) {
      if (PRIVATE_JWK_MEMBERS.some((m) => m in k)) die(`config.clients[${i}].jwks must hold public keys only`);
    }
    const scopes = c.scopes === undefined ? DEFAULT_SCOPES : asArray(c.scopes);
    if (!scopes || scopes.some((s) => typeof s !== 'string')) die(`config.clients[${i}].scopes must be an array of strings`);
    clients.set(c.client_id, {
      client_id: c.client_id,
      jwks: jose.createLocalJWKSet({ keys }),
      scopes: new Set(scopes),
      dpop_required: c.dpop_required === undefined ? true : !!c.dpop_required,
    });
  }
  return {
    clients,
    users: intOpt('users', 450, 0),
    groups: intOpt('groups', 30, 0),
    token_lifetime: intOpt('token_lifetime', 3600, 1),
    rate_limit: intOpt('rate_limit', 600, 1), // X-Rate-Limit-Limit (reported, not enforced)
    rs_nonce: !!raw.rs_nonce,
  };
}

const config = loadConfig(opts.config);

// ===========================================================================
// 3. Small helpers
// ===========================================================================

const nowSec = () => Math.floor(Date.now() / 1000);
const b64url = (buf) => Buffer.from(buf).toString('base64url');
const randomToken = (bytes = 24) => b64url(crypto.randomBytes(bytes));
const sha256b64url = (s) => b64url(crypto.createHash('sha256').update(s, 'ascii').digest());

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
function randomAlnum(n) {
  const bytes = crypto.randomBytes(n);
  let s = '';
  for (const b of bytes) s += ALNUM[b % ALNUM.length];
  return s;
}
// Okta error ids look like "oae" + 22 alphanumerics.
const newErrorId = () => 'oae' + randomAlnum(22);

const iso = (ms) => (ms === null ? null : new Date(ms).toISOString().replace(/\.\d{3}Z$/, '.000Z'));

// A set of one-time identifiers (jti) that forgets entries once they could no
// longer be accepted anyway (their time window has passed).
class ReplayCache {
  constructor() { this.map = new Map(); }
  has(key) { return this.map.has(key); }
  add(key, expiresAtSec) {
    this.map.set(key, expiresAtSec);
    if (this.map.size > 10000) this.prune();
  }
  prune() {
    const now = nowSec();
    for (const [k, exp] of this.map) if (exp < now) this.map.delete(k);
  }
}

// Current + previous nonce; both are accepted so a rotation does not break a
// request already in flight (this is what Okta does).
class NonceStore {
  constructor() { this.current = randomToken(24); this.previous = null; }
  rotate() { this.previous = this.current; this.current = randomToken(24); }
  accepts(n) { return typeof n === 'string' && n !== '' && (n === this.current || n === this.previous); }
}

// ===========================================================================
// 4. State
// ===========================================================================

// The emulator's own access token signing key (ES256), fresh per start.
const signing = await (async () => {
  const { publicKey, privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
  const jwk = await jose.exportJWK(publicKey);
  const kid = await jose.calculateJwkThumbprint(jwk, 'sha256');
  return { publicKey, privateKey, kid, jwk: { ...jwk, kid, use: 'sig', alg: 'ES256' } };
})();

const state = {
  rsNonceMode: config.rs_nonce,
  tokenLifetime: config.token_lifetime,
  asNonce: new NonceStore(),
  rsNonce: new NonceStore(),
  assertionJtis: new ReplayCache(), // client_id + jti of client assertions
  proofJtis: new ReplayCache(), // jti of DPoP proofs (AS and RS alike)
  issuedTokens: new Map(), // access token jti -> exp
  revokedTokens: new Set(),
  faults: [],
  log: [],
  seq: 0,
  rate: new Map(), // bucket -> { window, count }
};

// ---- directory data -------------------------------------------------------
//
// Deterministic users. User i (1-based):
//   id        00u + i zero-padded to 15 digits, e.g. 00u000000000000001
//   profile   firstName/lastName from fixed lists, email = login = user{i}@example.com
//   status    ACTIVE
//   created   2016-01-01 + i days; activated/statusChanged/passwordChanged = created + 1 h
//   lastLogin (relative to today 00:00 UTC, so "stale" stays stale over time)
//             i % 45 == 0           -> null (never logged in)            10 of 450
//             else i % 9 == 0        -> 2 to 3 years ago                  40 of 450
//             else i % 7 == 0        -> 100 to 179 days ago               51 of 450
//             else                   -> 1 to 30 days ago
const FIRST_NAMES = ['Ada', 'Alan', 'Grace', 'Linus', 'Barbara', 'Dennis', 'Ken', 'Margaret', 'Edsger', 'Donald',
  'Frances', 'John', 'Radia', 'Tim', 'Hedy', 'Claude', 'Katherine', 'Vint', 'Shafi', 'Leslie'];
const LAST_NAMES = ['Lovelace', 'Turing', 'Hopper', 'Torvalds', 'Liskov', 'Ritchie', 'Thompson', 'Hamilton',
  'Dijkstra', 'Knuth', 'Allen', 'McCarthy', 'Perlman', 'Berners-Lee', 'Lamarr', 'Shannon', 'Johnson', 'Cerf',
  'Goldwasser', 'Lamport'];
const DAY_MS = 86400000;
const HOUR_MS = 3600000;

const userId = (n) => '00u' + String(n).padStart(15, '0');
const groupId = (n) => '00g' + String(n).padStart(15, '0');

const users = new Map(); // id -> user record; insertion order == id order (ids only grow)
const loginIndex = new Map(); // lower-case login -> id
let nextUserNum = 1;

function seedUsers(count) {
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const base = Date.UTC(2016, 0, 1);
  for (let i = 1; i <= count; i++) {
    const created = base + i * DAY_MS + (i % 24) * HOUR_MS;
    const activated = created + HOUR_MS;
    let lastLogin;
    if (i % 45 === 0) lastLogin = null;
    else if (i % 9 === 0) lastLogin = today - (730 + ((i * 13) % 400)) * DAY_MS + (i % 24) * HOUR_MS;
    else if (i % 7 === 0) lastLogin = today - (100 + (i % 80)) * DAY_MS + (i % 24) * HOUR_MS;
    else lastLogin = today - ((i % 30) + 1) * DAY_MS + (i % 24) * HOUR_MS;
    const email = `user${i}@example.com`;
    addUser({
      num: i,
      status: 'ACTIVE',
      created, activated, statusChanged: activated, lastLogin, lastUpdated: activated, passwordChanged: activated,
      profile: {
        firstName: FIRST_NAMES[(i - 1) % FIRST_NAMES.length],
        lastName: LAST_NAMES[Math.floor((i - 1) / FIRST_NAMES.length) % LAST_NAMES.length],
        mobilePhone: null,
        secondEmail: null,
        login: email,
        email,
      },
    });
  }
}

function addUser(rec) {
  rec.id = userId(rec.num);
  users.set(rec.id, rec);
  loginIndex.set(String(rec.profile.login).toLowerCase(), rec.id);
  nextUserNum = Math.max(nextUserNum, rec.num + 1);
  return rec;
}

function deleteUser(rec) {
  users.delete(rec.id);
  loginIndex.delete(String(rec.profile.login).toLowerCase());
}

function findUser(idOrLogin) {
  return users.get(idOrLogin) || users.get(loginIndex.get(idOrLogin.toLowerCase()));
}

function renderUser(u, base) {
  return {
    id: u.id,
    status: u.status,
    created: iso(u.created),
    activated: iso(u.activated),
    statusChanged: iso(u.statusChanged),
    lastLogin: iso(u.lastLogin),
    lastUpdated: iso(u.lastUpdated),
    passwordChanged: iso(u.passwordChanged),
    type: { id: 'oty000000000000001' },
    profile: u.profile,
    credentials: { provider: { type: 'OKTA', name: 'OKTA' } },
    _links: { self: { href: `${base}/api/v1/users/${u.id}` } },
  };
}

const groups = [];
function seedGroups(count) {
  const created = Date.UTC(2016, 0, 1);
  for (let i = 1; i <= count; i++) {
    // Like a real org, the first group is the built-in "Everyone".
    const everyone = i === 1;
    groups.push({
      id: groupId(i),
      created: iso(created + i * DAY_MS),
      lastUpdated: iso(created + i * DAY_MS),
      lastMembershipUpdated: iso(created + i * DAY_MS + HOUR_MS),
      objectClass: ['okta:user_group'],
      type: everyone ? 'BUILT_IN' : 'OKTA_GROUP',
      profile: everyone
        ? { name: 'Everyone', description: 'All users in your organization' }
        : { name: `Group ${i}`, description: `Test group number ${i}` },
    });
  }
}

seedUsers(config.users);
seedGroups(config.groups);

// ===========================================================================
// 5. HTTP response helpers
// ===========================================================================

// Everything a handler needs about the request being served.
//   ctx = { req, res, entry, base, path, query, params, body, bucket }

// Rate-limit headers: a per-bucket, per-minute counter. Reported like Okta,
// but never enforced (the "rate_limit" fault produces 429s on demand).
function rateHeaders(bucket) {
  const window = Math.floor(nowSec() / 60);
  let r = state.rate.get(bucket);
  if (!r || r.window !== window) { r = { window, count: 0 }; state.rate.set(bucket, r); }
  r.count++;
  return {
    'X-Rate-Limit-Limit': String(config.rate_limit),
    'X-Rate-Limit-Remaining': String(Math.max(0, config.rate_limit - r.count)),
    'X-Rate-Limit-Reset': String((window + 1) * 60),
  };
}

function send(ctx, status, body, headers = {}) {
  const { res, entry } = ctx;
  if (res.headersSent || res.destroyed) return;
  let payload = '';
  const h = {
    'X-Okta-Request-Id': randomToken(18),
    ...(ctx.rateHeaders || {}),
    ...headers,
  };
  if (body !== null && body !== undefined) {
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      payload = body;
    } else {
      payload = JSON.stringify(body);
      if (!h['Content-Type']) h['Content-Type'] = 'application/json';
    }
  }
  if (status !== 204 && status !== 304) h['Content-Length'] = Buffer.byteLength(payload);
  if (entry) {
    entry.status = status;
    if (body && typeof body === 'object' && !Buffer.isBuffer(body)) entry.error = body.error || body.errorCode || null;
  }
  res.writeHead(status, h);
  res.end(status === 204 ? undefined : payload);
}

// Okta management API error body.
function oktaError(ctx, status, errorCode, errorSummary, errorCauses = [], headers = {}) {
  send(ctx, status, { errorCode, errorSummary, errorLink: errorCode, errorId: newErrorId(), errorCauses }, headers);
}

// OAuth 2.0 error body (authorization server, DPoP proof errors).
function oauthError(ctx, status, error, description, headers = {}) {
  send(ctx, status, { error, error_description: description }, { 'Cache-Control': 'no-store', Pragma: 'no-cache', ...headers });
}

// WWW-Authenticate parameter values must not contain a double quote.
const q = (s) => `"${String(s).replace(/["\\]/g, "'")}"`;

// ===========================================================================
// 6. DPoP proof validation (RFC 9449 section 4.3)
// ===========================================================================

class ProofError extends Error {}

// The DPoP header values of a request (Node keeps repeated headers apart in
// headersDistinct, so two DPoP headers are seen as two).
const dpopHeaders = (req) => req.headersDistinct.dpop || [];

// Unverified look at the proof, only for the request log.
function peekProof(req) {
  const vals = dpopHeaders(req);
  if (vals.length !== 1) return null;
  try { return jose.decodeJwt(vals[0].trim()); } catch { return null; }
}

// Checks everything but the nonce. expect = { htm, htu, stripHtuQuery,
// accessToken?, jkt? }. Returns { payload, jwk, jkt } or throws ProofError.
// The proof jti is recorded only once the proof has passed every check.
async function verifyProof(req, expect) {
  const vals = dpopHeaders(req);
  if (vals.length === 0 || vals[0].trim() === '') throw new ProofError('DPoP proof is missing');
  if (vals.length > 1) throw new ProofError('more than one DPoP header; exactly one proof is allowed');
  const proof = vals[0].trim();
  if (proof.split('.').length !== 3) throw new ProofError('DPoP proof is not a compact JWS');

  let header;
  try { header = jose.decodeProtectedHeader(proof); } catch { throw new ProofError('DPoP proof header is not valid'); }
  if (header.typ !== 'dpop+jwt') throw new ProofError('typ must be dpop+jwt');
  if (!ASYMMETRIC_ALGS.includes(header.alg)) throw new ProofError('alg is not an allowed asymmetric algorithm');
  const jwk = header.jwk;
  if (!jwk || typeof jwk !== 'object' || Array.isArray(jwk)) throw new ProofError('jwk header is missing');
  if (PRIVATE_JWK_MEMBERS.some((m) => m in jwk)) throw new ProofError('jwk header must be a public key');
  if (jwk.kty !== 'RSA' && jwk.kty !== 'EC') throw new ProofError('jwk kty is not supported');

  let key;
  try { key = await jose.importJWK(jwk, header.alg); } catch { throw new ProofError('jwk header is not a valid key for alg'); }
  let payload;
  try {
    ({ payload } = await jose.jwtVerify(proof, key, { algorithms: [header.alg], typ: 'dpop+jwt' }));
  } catch (e) {
    if (e.code === 'ERR_JWT_EXPIRED') throw new ProofError('DPoP proof is expired');
    if (e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') throw new ProofError(`DPoP proof claim ${e.claim} is invalid`);
    throw new ProofError('DPoP proof signature is invalid');
  }

  const { jti, htm, htu, iat } = payload;
  if (typeof jti !== 'string' || jti === '') throw new ProofError('jti is missing');
  if (typeof htm !== 'string') throw new ProofError('htm is missing');
  if (htm !== expect.htm) throw new ProofError('htm does not match the request method');
  if (typeof htu !== 'string') throw new ProofError('htu is missing');
  // The authorization server ignores a query/fragment in htu (RFC 9449); the
  // resource server compares htu literally, so a query there fails.
  const htuCmp = expect.stripHtuQuery ? htu.replace(/[?#].*$/s, '') : htu;
  if (htuCmp !== expect.htu) throw new ProofError('htu does not match the request URL');
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw new ProofError('iat is missing');
  if (Math.abs(nowSec() - iat) > 60) throw new ProofError('iat is outside the acceptable window');

  if (expect.accessToken !== undefined) {
    if (typeof payload.ath !== 'string') throw new ProofError('ath is missing');
    if (payload.ath !== sha256b64url(expect.accessToken)) throw new ProofError('ath does not match the access token');
  }
  const jkt = await jose.calculateJwkThumbprint(jwk, 'sha256');
  if (expect.jkt !== undefined && jkt !== expect.jkt) {
    throw new ProofError('jwk thumbprint does not match the access token cnf.jkt');
  }
  if (state.proofJtis.has(jti)) throw new ProofError('jti replayed');
  // Keep it until the iat window has surely passed for this proof.
  state.proofJtis.add(jti, Math.max(iat, nowSec()) + 120);
  return { payload, jwk, jkt };
}

// ===========================================================================
// 7. Authorization server: POST /oauth2/v1/token
// ===========================================================================

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const CLIENT_AUTH_FAILED = 'Client authentication failed. Either the client or the client credentials are invalid.';

function assertionErrorDescription(e) {
  switch (e.code) {
    case 'ERR_JWT_EXPIRED': return 'The client_assertion token is expired.';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return 'The client_assertion signature is invalid.';
    case 'ERR_JWKS_NO_MATCHING_KEY': return 'No key registered for the client matches the client_assertion (kid/alg).';
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return 'The client_assertion alg is not allowed.';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.reason === 'missing') return `The '${e.claim}' claim is required in the client_assertion.`;
      if (e.claim === 'aud') return 'The audience [aud] claim is invalid.';
      if (e.claim === 'sub' || e.claim === 'iss') return 'The issuer [iss] and subject [sub] claims must both be the client_id.';
      if (e.claim === 'nbf') return 'The client_assertion token is not yet valid.';
      return `The '${e.claim}' claim of the client_assertion is invalid.`;
    default: return 'The client_assertion is invalid.';
  }
}

async function handleToken(ctx) {
  const { req } = ctx;
  if (req.method !== 'POST') {
    return oktaError(ctx, 405, 'E0000022', 'The endpoint does not support the provided HTTP method', [], { Allow: 'POST' });
  }
  const ctype = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (ctype !== 'application/x-www-form-urlencoded') {
    return oauthError(ctx, 400, 'invalid_request', 'The request must use Content-Type application/x-www-form-urlencoded.');
  }
  const form = new URLSearchParams(ctx.body.toString('utf8'));
  for (const p of ['grant_type', 'scope', 'client_assertion', 'client_assertion_type', 'client_id']) {
    if (form.getAll(p).length > 1) return oauthError(ctx, 400, 'invalid_request', `The '${p}' parameter appears more than once.`);
  }

  // ---- grant type
  const grant = form.get('grant_type');
  if (!grant) return oauthError(ctx, 400, 'invalid_request', "The 'grant_type' parameter is required.");
  if (grant !== 'client_credentials') {
    return oauthError(ctx, 400, 'unsupported_grant_type',
      'The authorization grant type is not supported by the authorization server. Configured grant types: [client_credentials].');
  }

  // ---- client authentication: private_key_jwt
  const assertion = form.get('client_assertion');
  if (!assertion) return oauthError(ctx, 401, 'invalid_client', CLIENT_AUTH_FAILED);
  if (form.get('client_assertion_type') !== JWT_BEARER) {
    return oauthError(ctx, 400, 'invalid_client', `The client_assertion_type must be ${JWT_BEARER}.`);
  }
  let unverified;
  try { unverified = jose.decodeJwt(assertion); } catch {
    return oauthError(ctx, 400, 'invalid_client', 'The client_assertion is not a well-formed JWT.');
  }
  const client = typeof unverified.iss === 'string' ? config.clients.get(unverified.iss) : undefined;
  if (!client) return oauthError(ctx, 401, 'invalid_client', CLIENT_AUTH_FAILED);
  ctx.entry.client_id = client.client_id;
  if (form.has('client_id') && form.get('client_id') !== client.client_id) {
    return oauthError(ctx, 400, 'invalid_client', 'The client_id parameter does not match the client_assertion issuer.');
  }
  const tokenUrl = `${ctx.base}/oauth2/v1/token`;
  let claims;
  try {
    ({ payload: claims } = await jose.jwtVerify(assertion, client.jwks, {
      algorithms: ASYMMETRIC_ALGS,
      issuer: client.client_id,
      subject: client.client_id,
      audience: tokenUrl,
      requiredClaims: ['exp', 'jti'],
    }));
  } catch (e) {
    return oauthError(ctx, 400, 'invalid_client', assertionErrorDescription(e));
  }
  const now = nowSec();
  if (typeof claims.jti !== 'string' || claims.jti === '') {
    return oauthError(ctx, 400, 'invalid_client', "The 'jti' claim is required in the client_assertion.");
  }
  // Okta refuses assertions living longer than an hour.
  if (claims.exp - now > 3600 + 5 || (typeof claims.iat === 'number' && claims.exp - claims.iat > 3600)) {
    return oauthError(ctx, 400, 'invalid_client', 'The client_assertion token has an expiration too far in the future.');
  }
  if (typeof claims.iat === 'number' && claims.iat > now + 60) {
    return oauthError(ctx, 400, 'invalid_client', 'The client_assertion token was issued in the future.');
  }
  const jtiKey = `${client.client_id}\u0000${claims.jti}`;
  if (state.assertionJtis.has(jtiKey)) {
    return oauthError(ctx, 400, 'invalid_client', 'The client_assertion token has already been used (jti replay).');
  }
  // Consumed now, before the DPoP nonce check: like Okta, an assertion sent
  // with a nonce-less proof cannot be sent again.
  state.assertionJtis.add(jtiKey, claims.exp + 60);

  // ---- scopes
  const scopeParam = (form.get('scope') || '').trim();
  if (!scopeParam) {
    return oauthError(ctx, 400, 'invalid_scope',
      "The authorization server resource does not have any configured default scopes, 'scope' must be provided.");
  }
  const requested = [...new Set(scopeParam.split(/ +/))];
  const denied = requested.filter((s) => !client.scopes.has(s));
  if (denied.length) {
    return oauthError(ctx, 400, 'invalid_scope', `The following scopes are not allowed for this client: ${denied.join(' ')}.`);
  }

  // ---- DPoP
  let jkt = null;
  if (client.dpop_required) {
    let proof;
    try {
      proof = await verifyProof(req, { htm: 'POST', htu: tokenUrl, stripHtuQuery: true });
    } catch (e) {
      if (e instanceof ProofError) return oauthError(ctx, 400, 'invalid_dpop_proof', e.message);
      throw e;
    }
    if (!state.asNonce.accepts(proof.payload.nonce)) {
      return oauthError(ctx, 400, 'use_dpop_nonce', 'Authorization server requires nonce in DPoP proof.',
        { 'DPoP-Nonce': state.asNonce.current });
    }
    jkt = proof.jkt;
  }

  // ---- issue the access token
  const lifetime = state.tokenLifetime;
  const atJti = 'AT.' + randomToken(32);
  const atClaims = {
    ver: 1,
    jti: atJti,
    iss: ctx.base,
    aud: ctx.base,
    sub: client.client_id,
    cid: client.client_id,
    scp: requested,
    iat: now,
    exp: now + lifetime,
  };
  if (jkt) atClaims.cnf = { jkt };
  const accessToken = await new jose.SignJWT(atClaims)
    .setProtectedHeader({ alg: 'ES256', kid: signing.kid })
    .sign(signing.privateKey);
  state.issuedTokens.set(atJti, now + lifetime);
  const headers = { 'Cache-Control': 'no-store', Pragma: 'no-cache' };
  if (jkt) headers['DPoP-Nonce'] = state.asNonce.current;
  send(ctx, 200, {
    token_type: jkt ? 'DPoP' : 'Bearer',
    expires_in: lifetime,
    access_token: accessToken,
    scope: requested.join(' '),
  }, headers);
}

function handleKeys(ctx) {
  if (ctx.req.method !== 'GET') {
    return oktaError(ctx, 405, 'E0000022', 'The endpoint does not support the provided HTTP method', [], { Allow: 'GET' });
  }
  send(ctx, 200, { keys: [signing.jwk] }, { 'Cache-Control': 'max-age=300' });
}

function handleMetadata(ctx) {
  const b = ctx.base;
  send(ctx, 200, {
    issuer: b,
    token_endpoint: `${b}/oauth2/v1/token`,
    jwks_uri: `${b}/oauth2/v1/keys`,
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ASYMMETRIC_ALGS,
    dpop_signing_alg_values_supported: ASYMMETRIC_ALGS,
  });
}

// ===========================================================================
// 8. Resource server: /api/v1/*
// ===========================================================================

const ALGS_CHALLENGE = `DPoP algs="${ASYMMETRIC_ALGS.join(' ')}"`;
const INVALID_TOKEN_DESC = 'The access token is invalid.';

function invalidToken(ctx, scheme, description = INVALID_TOKEN_DESC) {
  oktaError(ctx, 401, 'E0000011', 'Invalid token provided', [],
    { 'WWW-Authenticate': `${scheme} error="invalid_token", error_description=${q(description)}` });
}

// Returns the verified access token claims, or null after answering.
async function authenticateApi(ctx) {
  const { req } = ctx;
  const authz = req.headers.authorization;
  if (!authz) {
    oktaError(ctx, 401, 'E0000011', 'Invalid token provided', [], { 'WWW-Authenticate': ALGS_CHALLENGE });
    return null;
  }
  const m = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+) +(\S+) *$/.exec(authz);
  const scheme = m ? m[1].toLowerCase() : '';
  if (scheme !== 'dpop' && scheme !== 'bearer') {
    invalidToken(ctx, 'DPoP', 'Unsupported authorization scheme.');
    return null;
  }
  const challengeScheme = scheme === 'dpop' ? 'DPoP' : 'Bearer';
  const token = m[2];
  let claims;
  try {
    ({ payload: claims } = await jose.jwtVerify(token, signing.publicKey, {
      algorithms: ['ES256'], issuer: ctx.base, audience: ctx.base, requiredClaims: ['exp', 'jti'],
    }));
  } catch {
    invalidToken(ctx, challengeScheme);
    return null;
  }
  if (state.revokedTokens.has(claims.jti)) { invalidToken(ctx, challengeScheme); return null; }
  const jkt = claims.cnf && claims.cnf.jkt;
  if (!jkt) {
    if (scheme === 'dpop') { invalidToken(ctx, 'DPoP', 'The access token is not DPoP-bound.'); return null; }
    return claims; // plain Bearer token from a non-DPoP client
  }
  if (scheme === 'bearer') {
    invalidToken(ctx, 'DPoP', 'DPoP-bound access token used with Bearer scheme');
    return null;
  }
  // htu is compared with the percent-DECODED request path, like Okta.
  let decodedPath;
  try { decodedPath = decodeURIComponent(ctx.path); } catch { decodedPath = ctx.path; }
  let proof;
  try {
    proof = await verifyProof(req, { htm: req.method, htu: ctx.base + decodedPath, accessToken: token, jkt });
  } catch (e) {
    if (!(e instanceof ProofError)) throw e;
    oauthError(ctx, 400, 'invalid_dpop_proof', e.message,
      { 'WWW-Authenticate': `DPoP error="invalid_dpop_proof", error_description=${q(e.message)}` });
    return null;
  }
  if (state.rsNonceMode) {
    if (!state.rsNonce.accepts(proof.payload.nonce)) {
      const desc = 'Resource server requires nonce in DPoP proof';
      oauthError(ctx, 401, 'use_dpop_nonce', desc, {
        'WWW-Authenticate': `DPoP error="use_dpop_nonce", error_description=${q(desc)}`,
        'DPoP-Nonce': state.rsNonce.current,
      });
      return null;
    }
    ctx.extraHeaders['DPoP-Nonce'] = state.rsNonce.current;
  }
  return claims;
}

// ---- routing ------------------------------------------------------------

const SCOPES = {
  usersRead: ['okta.users.read', 'okta.users.manage'],
  usersManage: ['okta.users.manage'],
  groupsRead: ['okta.groups.read', 'okta.groups.manage'],
};

// Route table: pattern segments (":x" captures one segment, percent-decoded).
const ROUTES = [
  { pattern: ['users'], methods: { GET: [SCOPES.usersRead, listUsers], POST: [SCOPES.usersManage, createUser] } },
  { pattern: ['users', ':id'], methods: { GET: [SCOPES.usersRead, getUser], DELETE: [SCOPES.usersManage, removeUser] } },
  { pattern: ['users', ':id', 'lifecycle', 'deactivate'], methods: { POST: [SCOPES.usersManage, deactivateUser] } },
  { pattern: ['users', ':id', 'lifecycle', 'activate'], methods: { POST: [SCOPES.usersManage, activateUser] } },
  { pattern: ['groups'], methods: { GET: [SCOPES.groupsRead, listGroups] } },
  { pattern: ['groups', ':id'], methods: { GET: [SCOPES.groupsRead, getGroup] } },
];

function matchRoute(segs) {
  for (const r of ROUTES) {
    if (r.pattern.length !== segs.length) continue;
    const params = {};
    let ok = true;
    for (let i = 0; i < segs.length && ok; i++) {
      const p = r.pattern[i];
      if (p.startsWith(':')) {
        try { params[p.slice(1)] = decodeURIComponent(segs[i]); } catch { ok = false; }
        if (segs[i] === '') ok = false;
      } else if (p !== segs[i]) ok = false;
    }
    if (ok) return { route: r, params };
  }
  return null;
}

async function handleApi(ctx) {
  ctx.extraHeaders = {};
  const claims = await authenticateApi(ctx);
  if (!claims) return;
  ctx.entry.client_id = claims.cid || null;

  const segs = ctx.path.slice('/api/v1/'.length).split('/');
  const m = ctx.path.startsWith('/api/v1/') ? matchRoute(segs) : null;
  if (!m) return oktaError(ctx, 404, 'E0000022', 'The endpoint does not support the provided HTTP method', [], ctx.extraHeaders);
  const method = m.route.methods[ctx.req.method];
  if (!method) {
    return oktaError(ctx, 405, 'E0000022', 'The endpoint does not support the provided HTTP method', [],
      { Allow: Object.keys(m.route.methods).join(', '), ...ctx.extraHeaders });
  }
  const [needed, handler] = method;
  const granted = Array.isArray(claims.scp) ? claims.scp : [];
  if (!needed.some((s) => granted.includes(s))) {
    return oktaError(ctx, 403, 'E0000006', 'You do not have permission to perform the requested action', [], ctx.extraHeaders);
  }
  ctx.params = m.params;
  return handler(ctx);
}

// Answers from API handlers carry the RS nonce header when in nonce mode.
const apiSend = (ctx, status, body, headers = {}) => send(ctx, status, body, { ...ctx.extraHeaders, ...headers });
const apiError = (ctx, status, code, summary, causes = []) => oktaError(ctx, status, code, summary, causes, ctx.extraHeaders);

// limit: default 200, max 200 (larger values are clamped, like Okta).
function pageLimit(ctx) {
  const raw = ctx.query.get('limit');
  if (raw === null || raw === '') return 200;
  if (!/^\d+$/.test(raw) || Number(raw) < 1) return null;
  return Math.min(200, Number(raw));
}

// Cursor pagination over items ordered by id; `after` is the last id of the
// previous page. Sends two separate Link header lines like Okta.
function sendPage(ctx, resource, items, render, extraQuery = '') {
  const limit = pageLimit(ctx);
  if (limit === null) {
    return apiError(ctx, 400, 'E0000001', 'Api validation failed: limit', [{ errorSummary: 'limit: must be a positive integer' }]);
  }
  const after = ctx.query.get('after');
  const start = after ? items.findIndex((it) => it.id > after) : 0;
  const page = start < 0 ? [] : items.slice(start, start + limit);
  const more = start >= 0 && start + limit < items.length;
  const selfQuery = (after ? `after=${encodeURIComponent(after)}&` : '') + `limit=${limit}${extraQuery}`;
  const links = [`<${ctx.base}/api/v1/${resource}?${selfQuery}>; rel="self"`];
  if (more) {
    const origin = ctx.nextOffOrigin ? 'https://evil.example.com' : ctx.base;
    const last = page[page.length - 1].id;
    links.push(`<${origin}/api/v1/${resource}?after=${last}&limit=${limit}${extraQuery}>; rel="next"`);
  }
  apiSend(ctx, 200, page.map(render), { Link: links });
}

function listUsers(ctx) {
  let list = [...users.values()];
  let extraQuery = '';
  const filter = ctx.query.get('filter');
  if (filter !== null) {
    // Only `status eq "X"` is supported; anything else is an invalid search.
    const fm = /^\s*status\s+eq\s+"([A-Z_]+)"\s*$/.exec(filter);
    if (!fm) return apiError(ctx, 400, 'E0000031', 'Invalid search criteria.');
    list = list.filter((u) => u.status === fm[1]);
    extraQuery = `&filter=${encodeURIComponent(filter)}`;
  }
  sendPage(ctx, 'users', list, (u) => renderUser(u, ctx.base), extraQuery);
}

function userNotFound(ctx) {
  apiError(ctx, 404, 'E0000007', `Not found: Resource not found: ${ctx.params.id} (User)`);
}

function getUser(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  apiSend(ctx, 200, renderUser(u, ctx.base));
}

function parseJsonBody(ctx) {
  try {
    const v = JSON.parse(ctx.body.toString('utf8'));
    return v;
  } catch {
    apiError(ctx, 400, 'E0000003', 'The request body was not well-formed.');
    return undefined;
  }
}

function createUser(ctx) {
  const ctype = String(ctx.req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (ctype !== 'application/json') {
    return apiError(ctx, 415, 'E0000018', 'Bad request.  Accept and/or Content-Type headers likely do not match supported values.');
  }
  const body = parseJsonBody(ctx);
  if (body === undefined) return;
  const profile = body && typeof body === 'object' ? body.profile : undefined;
  if (!profile || typeof profile !== 'object' || Array.isArray(profile)
      || typeof profile.login !== 'string' || profile.login.trim() === '') {
    return apiError(ctx, 400, 'E0000001', 'Api validation failed: login',
      [{ errorSummary: 'login: The field cannot be left blank' }]);
  }
  if (loginIndex.has(profile.login.toLowerCase())) {
    return apiError(ctx, 400, 'E0000001', 'Api validation failed: login',
      [{ errorSummary: 'login: An object with this field already exists in the current organization' }]);
  }
  const activate = ctx.query.get('activate') !== 'false'; // Okta's default is true
  const now = Date.now();
  const u = addUser({
    num: nextUserNum,
    status: activate ? 'ACTIVE' : 'STAGED',
    created: now,
    activated: activate ? now : null,
    statusChanged: activate ? now : null,
    lastLogin: null,
    lastUpdated: now,
    passwordChanged: null,
    profile: { firstName: null, lastName: null, mobilePhone: null, secondEmail: null, email: null, ...profile },
  });
  apiSend(ctx, 200, renderUser(u, ctx.base));
}

function setStatus(u, status) {
  u.status = status;
  u.statusChanged = u.lastUpdated = Date.now();
  if (status === 'ACTIVE') u.activated = u.statusChanged;
}

function deactivateUser(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  if (u.status !== 'DEPROVISIONED') setStatus(u, 'DEPROVISIONED');
  apiSend(ctx, 200, {});
}

function activateUser(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  if (u.status === 'ACTIVE') {
    return apiError(ctx, 403, 'E0000016', 'Activation failed because the user is already active');
  }
  setStatus(u, 'ACTIVE');
  apiSend(ctx, 200, {});
}

// Okta: DELETE on a user that is not DEPROVISIONED deactivates it; a second
// DELETE removes it for good.
function removeUser(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  if (u.status !== 'DEPROVISIONED') setStatus(u, 'DEPROVISIONED');
  else deleteUser(u);
  apiSend(ctx, 204, null);
}

function listGroups(ctx) {
  sendPage(ctx, 'groups', groups, (g) => ({ ...g, _links: { self: { href: `${ctx.base}/api/v1/groups/${g.id}` } } }));
}

function getGroup(ctx) {
  const g = groups.find((x) => x.id === ctx.params.id);
  if (!g) return apiError(ctx, 404, 'E0000007', `Not found: Resource not found: ${ctx.params.id} (UserGroup)`);
  apiSend(ctx, 200, { ...g, _links: { self: { href: `${ctx.base}/api/v1/groups/${g.id}` } } });
}

// ===========================================================================
// 9. Fault injection
// ===========================================================================

const FAULT_KINDS = ['html502', 'html503', 'truncated', 'reset', 'delay', 'rate_limit', 'redirect',
  'next_off_origin', 'not_json', 'deep_json'];

function validateFault(f, i) {
  if (!f || typeof f !== 'object') throw new Error(`faults[${i}] must be an object`);
  for (const k of Object.keys(f)) {
    if (!['path_prefix', 'method', 'kind', 'times', 'delay_ms', 'reset_in', 'location'].includes(k)) {
      throw new Error(`faults[${i}]: unknown key ${k}`);
    }
  }
  if (!FAULT_KINDS.includes(f.kind)) throw new Error(`faults[${i}].kind must be one of ${FAULT_KINDS.join(', ')}`);
  if (typeof f.path_prefix !== 'string' || !f.path_prefix.startsWith('/')) throw new Error(`faults[${i}].path_prefix must start with /`);
  if (f.method !== undefined && typeof f.method !== 'string') throw new Error(`faults[${i}].method must be a string`);
  const int = (name, dflt) => {
    const v = f[name] === undefined ? dflt : f[name];
    if (!Number.isInteger(v) || v < 0) throw new Error(`faults[${i}].${name} must be a non-negative integer`);
    return v;
  };
  const times = int('times', 1);
  if (times < 1) throw new Error(`faults[${i}].times must be >= 1`);
  return {
    path_prefix: f.path_prefix,
    method: f.method ? f.method.toUpperCase() : null,
    kind: f.kind,
    times,
    delay_ms: int('delay_ms', 1000),
    reset_in: int('reset_in', 1),
    location: typeof f.location === 'string' ? f.location : 'http://other.example/',
  };
}

// Takes (and uses up one hit of) the first fault matching the request.
function takeFault(method, p) {
  const i = state.faults.findIndex((f) => p.startsWith(f.path_prefix) && (!f.method || f.method === method));
  if (i < 0) return null;
  const f = state.faults[i];
  if (--f.times <= 0) state.faults.splice(i, 1);
  return f;
}

const htmlPage = (code, text) =>
  `<!DOCTYPE html>\n<html><head><title>${code} ${text}</title></head>` +
  `<body><h1>${code} ${text}</h1><p>The server encountered a temporary error.</p></body></html>\n`;

// Answers the request with the fault. Returns true when the request is done,
// false when normal processing should go on (delay, next_off_origin).
async function applyFault(ctx, f) {
  const { res, entry } = ctx;
  entry.fault = f.kind;
  // A client must never reuse a proof or an assertion, even after a failed
  // exchange (a gateway may fail after the backend saw the request), so the
  // jtis presented to a request that a fault answers are consumed. (delay and
  // next_off_origin go on to normal processing, which checks them itself.)
  if (f.kind !== 'delay' && f.kind !== 'next_off_origin') consumePresentedJtis(ctx);
  switch (f.kind) {
    case 'delay':
      await new Promise((r) => setTimeout(r, f.delay_ms));
      return false;
    case 'next_off_origin':
      ctx.nextOffOrigin = true;
      return false;
    case 'html502':
      send(ctx, 502, htmlPage(502, 'Bad Gateway'), { 'Content-Type': 'text/html' });
      return true;
    case 'html503':
      send(ctx, 503, htmlPage(503, 'Service Unavailable'), { 'Content-Type': 'text/html' });
      return true;
    case 'redirect':
      send(ctx, 302, htmlPage(302, 'Found'), { Location: f.location, 'Content-Type': 'text/html' });
      return true;
    case 'not_json':
      send(ctx, 200, '<html>oops</html>', { 'Content-Type': 'application/json' });
      return true;
    case 'deep_json':
      send(ctx, 200, '['.repeat(100000) + ']'.repeat(100000), { 'Content-Type': 'application/json' });
      return true;
    case 'rate_limit': {
      const reset = nowSec() + f.reset_in;
      ctx.rateHeaders = {
        'X-Rate-Limit-Limit': String(config.rate_limit),
        'X-Rate-Limit-Remaining': '0',
        'X-Rate-Limit-Reset': String(reset),
      };
      oktaError(ctx, 429, 'E0000047', 'API call exceeded rate limit due to too many requests.');
      return true;
    }
    case 'truncated': {
      // Promise more bytes than are sent, then drop the connection. The bytes
      // sent are the start of a plausible answer for the endpoint.
      const body = ctx.kind === 'token'
        ? '{"token_type":"DPoP","expires_in":3600,"access_token":"eyJraWQiOiJ0cnVuY2F0ZWQi'
        : JSON.stringify([{ id: userId(1), status: 'ACTIVE', profile: { login: 'user1@example.com' } }]).slice(0, -2);
      entry.status = 200;
      res.writeHead(200, {
        'X-Okta-Request-Id': randomToken(18),
        ...(ctx.rateHeaders || {}),
        'Content-Type': 'application/json',
        'Content-Length': String(Buffer.byteLength(body) + 1000),
      });
      res.write(body, () => setTimeout(() => res.socket && res.socket.destroy(), 20));
      return true;
    }
    case 'reset':
      entry.status = 0;
      // RST rather than FIN, so the client sees "connection reset by peer".
      if (typeof ctx.req.socket.resetAndDestroy === 'function' && !ctx.tls) ctx.req.socket.resetAndDestroy();
      else ctx.req.socket.destroy();
      return true;
    default:
      return false;
  }
}

function consumePresentedJtis(ctx) {
  const proof = peekProof(ctx.req);
  if (proof && typeof proof.jti === 'string' && !state.proofJtis.has(proof.jti)) {
    state.proofJtis.add(proof.jti, nowSec() + 180);
  }
  if (ctx.kind === 'token') {
    try {
      const form = new URLSearchParams(ctx.body.toString('utf8'));
      const a = jose.decodeJwt(form.get('client_assertion') || '');
      if (typeof a.iss === 'string' && typeof a.jti === 'string') {
        const key = `${a.iss}\u0000${a.jti}`;
        if (!state.assertionJtis.has(key)) state.assertionJtis.add(key, (Number(a.exp) || nowSec()) + 3660);
      }
    } catch { /* not a JWT: nothing to consume */ }
  }
}

// ===========================================================================
// 10. Test control API: /__emulator/*  (no auth; loopback test use only)
// ===========================================================================

function settingsSnapshot() {
  return {
    rs_nonce: state.rsNonceMode,
    token_lifetime: state.tokenLifetime,
    faults: state.faults,
    as_nonce: state.asNonce.current,
    rs_nonce_value: state.rsNonce.current,
    users: users.size,
    log_entries: state.log.length,
  };
}

function applyControl(body) {
  const known = ['rs_nonce', 'rotate_nonce', 'expire_tokens', 'token_lifetime', 'faults'];
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('body must be a JSON object');
  for (const k of Object.keys(body)) if (!known.includes(k)) throw new Error(`unknown control key ${k}`);
  // Validate everything before changing anything.
  if (body.token_lifetime !== undefined && (!Number.isInteger(body.token_lifetime) || body.token_lifetime < 1)) {
    throw new Error('token_lifetime must be a positive integer');
  }
  const faultList = body.faults === undefined ? [] : asArray(body.faults);
  if (!faultList) throw new Error('faults must be an array');
  const faults = faultList.map(validateFault);

  if (body.rs_nonce !== undefined) state.rsNonceMode = !!body.rs_nonce;
  if (body.rotate_nonce) { state.asNonce.rotate(); state.rsNonce.rotate(); }
  if (body.expire_tokens) for (const jti of state.issuedTokens.keys()) state.revokedTokens.add(jti);
  if (body.token_lifetime !== undefined) state.tokenLifetime = body.token_lifetime;
  state.faults.push(...faults);
}

function handleControl(ctx) {
  const { req } = ctx;
  const route = `${req.method} ${ctx.path}`;
  switch (route) {
    case 'GET /__emulator/log':
      return send(ctx, 200, state.log);
    case 'POST /__emulator/reset':
      state.log = [];
      state.seq = 0;
      state.faults = [];
      state.revokedTokens.clear();
      return send(ctx, 200, { ok: true });
    case 'POST /__emulator/control': {
      let body;
      try { body = JSON.parse(ctx.body.toString('utf8') || '{}'); } catch {
        return send(ctx, 400, { error: 'control body is not JSON' });
      }
      try { applyControl(body); } catch (e) { return send(ctx, 400, { error: e.message }); }
      return send(ctx, 200, settingsSnapshot());
    }
    case 'GET /__emulator/state':
      return send(ctx, 200, settingsSnapshot());
    case 'GET /__emulator/users/count':
      return send(ctx, 200, { count: users.size });
    default:
      return send(ctx, 404, { error: `no control endpoint ${route}` });
  }
}

// ===========================================================================
// 11. Dispatch and request log
// ===========================================================================

const MAX_BODY = 1024 * 1024;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) { reject(Object.assign(new Error('body too large'), { tooLarge: true })); req.pause(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function kindOf(p) {
  if (p === '/oauth2/v1/token') return 'token';
  if (p === '/oauth2/v1/keys') return 'keys';
  if (p.startsWith('/.well-known/')) return 'meta';
  if (p === '/api/v1' || p.startsWith('/api/v1/')) return 'api';
  return 'other';
}

const rateBucket = (p) => (p.startsWith('/api/v1/') ? '/api/v1/' + p.split('/')[3] : p);

async function handle(req, res, tls, base) {
  const rawUrl = req.url || '/';
  const qi = rawUrl.indexOf('?');
  const p = qi < 0 ? rawUrl : rawUrl.slice(0, qi);
  const queryString = qi < 0 ? '' : rawUrl.slice(qi + 1);
  const ctx = {
    req, res, tls, base, path: p, query: new URLSearchParams(queryString), entry: null, body: Buffer.alloc(0),
  };

  if (p.startsWith('/__emulator/')) {
    try { ctx.body = await readBody(req); } catch { return send(ctx, 413, { error: 'body too large' }); }
    return handleControl(ctx);
  }

  ctx.kind = kindOf(p);
  const authz = req.headers.authorization;
  const proof = peekProof(req);
  const entry = {
    seq: ++state.seq,
    t: Date.now(),
    method: req.method,
    path: p,
    query: queryString,
    kind: ctx.kind,
    status: null,
    has_dpop: dpopHeaders(req).length > 0,
    proof_nonce: proof && typeof proof.nonce === 'string' ? proof.nonce : null,
    proof_jti: proof && typeof proof.jti === 'string' ? proof.jti : null,
    auth_scheme: authz ? authz.split(' ')[0] : null,
    retry_for: req.headers['x-okta-retry-for'] ?? null,
    retry_count: req.headers['x-okta-retry-count'] ?? null,
    user_agent: req.headers['user-agent'] ?? null,
    client_id: null,
    error: null,
    fault: null,
  };
  state.log.push(entry);
  ctx.entry = entry;
  res.on('close', () => logLine(entry));
  ctx.rateHeaders = rateHeaders(rateBucket(p));

  try {
    ctx.body = await readBody(req);
  } catch (e) {
    if (e.tooLarge) return oktaError(ctx, 413, 'E0000001', 'Api validation failed: request body too large');
    throw e;
  }

  const fault = takeFault(req.method, p);
  if (fault && await applyFault(ctx, fault)) return;

  switch (ctx.kind) {
    case 'token': return handleToken(ctx);
    case 'keys': return handleKeys(ctx);
    case 'meta': return handleMetadata(ctx);
    case 'api': return handleApi(ctx);
    default: return oktaError(ctx, 404, 'E0000022', 'The endpoint does not support the provided HTTP method');
  }
}

function logLine(entry) {
  if (!verbose) return;
  // Path, status and error code only: never headers, bodies or tokens.
  process.stderr.write(`[okta-emulator] ${entry.method} ${entry.path}${entry.query ? '?' + entry.query : ''} -> ` +
    `${entry.status}${entry.error ? ' ' + entry.error : ''}${entry.fault ? ' fault=' + entry.fault : ''}\n`);
}

// ===========================================================================
// 12. Startup and shutdown
// ===========================================================================

const tls = !!opts.tlsCert;
let server;
try {
  server = tls
    ? https.createServer({ cert: fs.readFileSync(opts.tlsCert), key: fs.readFileSync(opts.tlsKey) })
    : http.createServer();
} catch (e) {
  die(`cannot start server: ${e.message}`);
}

let baseUrl = null; // known once listening (the port may be chosen by the OS)

server.on('request', (req, res) => {
  handle(req, res, tls, baseUrl)
    .catch((e) => {
      process.stderr.write(`[okta-emulator] internal error on ${req.method} ${req.url.split('?')[0]}: ${e && e.message}\n`);
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ errorCode: 'E0000009', errorSummary: 'Internal Server Error', errorLink: 'E0000009',
          errorId: newErrorId(), errorCauses: [] }));
      }
    });
});
server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  else socket.destroy();
});
server.on('error', (e) => die(`server error: ${e.message}`));

server.listen(opts.port, opts.host, () => {
  const { port } = server.address();
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const url = `${tls ? 'https' : 'http'}://${host}:${port}`;
  baseUrl = (opts.baseUrl || url).replace(/\/+$/, '');
  const ready = JSON.stringify({ port, url, pid: process.pid, base: baseUrl }) + '\n';
  if (opts.readyFile) {
    // Write then rename, so a reader polling for the file never sees half of
    // it; and before stdout, so a reader of stdout can count on the file too.
    const tmp = path.join(path.dirname(opts.readyFile), `.${path.basename(opts.readyFile)}.${process.pid}.tmp`);
    try {
      fs.writeFileSync(tmp, ready);
      fs.renameSync(tmp, opts.readyFile);
    } catch (e) {
      die(`cannot write ready file: ${e.message}`);
    }
  }
  process.stdout.write(ready);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

if (opts.watchPid) {
  // Gone, or a zombie nobody has reaped yet (Linux /proc), counts as gone.
  const watchedAlive = () => {
    try { process.kill(opts.watchPid, 0); } catch (e) { return e.code !== 'ESRCH'; }
    try { return !/^\d+ \(.*\) Z/s.test(fs.readFileSync(`/proc/${opts.watchPid}/stat`, 'utf8')); } catch { return true; }
  };
  setInterval(() => { if (!watchedAlive()) shutdown(); }, 1000).unref();
}
