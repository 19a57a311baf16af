#!/usr/bin/env node
// Strict Okta org emulator for oktadpop tests.
//
// Emulates the parts of an Okta org that oktadpop talks to:
//   * the org authorization server: POST /oauth2/v1/token with
//     client_credentials + private_key_jwt + DPoP (RFC 9449), GET /oauth2/v1/keys
//   * the management API (resource server) under /api/v1: users (lifecycle,
//     factors), groups (members), apps (assignments) and the System Log
//   * Okta's rate limits: per-minute buckets (or windows of any length), the per-app
//     share, other apps' use, concurrency
//   * a test-only control API under /__emulator/ (request log, faults, nonces, stats)
//
// It is deliberately strict: every check an Okta org makes (and a few RFC 9449
// ones) is enforced, so a client that passes here has no slack to lean on.
// Where Okta's answer is known (docs, SDK issues, captured responses) it is
// reproduced exactly, and the comment next to it names the source:
//   DOCS x      developer.okta.com/docs/reference/x (okta/okta-developer-docs)
//   [SPEC]      okta/okta-management-openapi-spec dist/current/management-minimal.yaml
//   [PY-X]      okta/okta-sdk-python docs/X.md (e.g. [PY-UserApi])
//   [GO-APP]    okta/okta-sdk-golang okta/docs/ApplicationAPI.md
//   [APPS]      DOCS api/apps (the older classic reference)
//   repo#N      GitHub issue or pull request N of that repository
// All JOSE work (JWT/JWS verification, JWK import, thumbprints, signing) is
// done with the `jose` package; Node's http/http2/crypto do the rest.
//
// Usage:
//   node server.mjs [--config CONFIG.json] [--port 0] [--host 127.0.0.1]
//                   [--tls-cert cert.pem --tls-key key.pem] [--base-url URL]
//                   [--clock-skew SECONDS] [--ready-file PATH] [--watch-pid PID] [--verbose]
//
// With TLS it speaks HTTP/2 to clients that offer it (ALPN h2) and HTTP/1.1 to
// the others. --watch-pid PID: exit once process PID is gone (so a test run
// that dies without stopping the emulator does not leave it running).
//
// Nothing secret (tokens, assertions, proofs, keys) is ever written to
// stdout/stderr. stdout carries exactly one JSON "ready" line.

import http from 'node:http';
import http2 from 'node:http2';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as jose from 'jose';

// ===========================================================================
// 1. Command line
// ===========================================================================

const USAGE = `usage: node server.mjs [--config CONFIG.json] [--port N] [--host 127.0.0.1]
                      [--tls-cert cert.pem --tls-key key.pem] [--base-url URL]
                      [--clock-skew SECONDS] [--ready-file PATH] [--watch-pid PID] [--verbose]`;

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
    '--clock-skew': 'clockSkew',
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
  if (opts.clockSkew !== undefined) {
    opts.clockSkew = Number(opts.clockSkew);
    if (!Number.isInteger(opts.clockSkew)) die('bad --clock-skew (whole seconds)');
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
// "none" and never a MAC (HS*): both would let anyone forge them. The same
// list, in Okta's order, is the algs= of every DPoP challenge.
const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512'];
// JWK members that only a private (or symmetric) key has.
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
// The admin role of a service app decides what its granted scopes may do
// (Okta guide implement-oauth-for-okta-serviceapp: "the admin roles need to
// have enough permissions for the scopes provided").
const ADMIN_ROLES = ['SUPER_ADMIN', 'READ_ONLY_ADMIN', 'GROUP_ADMIN'];

// Per-minute limits, Workforce Identity column of DOCS reference/rl-global-mgmt
// (management buckets) and rl-global-enduser (/oauth2). "/" (metadata, keys)
// is unlimited there, so it has no entry and is never counted.
const WORKFORCE_LIMITS = {
  '/api/v1/users': 600,
  'GET /api/v1/users/{id}': 2000,
  '/api/v1/users/{id}': 600,
  '/api/v1/groups': 500,
  '/api/v1/groups/{id}': 1000,
  '/api/v1/apps': 100,
  '/api/v1/apps/{id}': 500,
  '/api/v1/logs': 120,
  '/api/v1/events': 100,
  '/api/v1': 1200,
  '/oauth2': 2000,
};

// lua-cjson encodes an empty Lua table as {}: accept that as an empty list.
function asArray(v) {
  if (Array.isArray(v)) return v;
  if (v && typeof v === 'object' && Object.keys(v).length === 0) return [];
  return null;
}

const isInt = (v, min) => Number.isInteger(v) && v >= min;

// {"<bucket>": n}: only known buckets, positive whole limits. Throws.
function parseRateLimits(v, where) {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${where} must be an object`);
  for (const [bucket, n] of Object.entries(v)) {
    if (!(bucket in WORKFORCE_LIMITS)) throw new Error(`${where}: unknown bucket ${bucket}`);
    if (!isInt(n, 1)) throw new Error(`${where}.${bucket} must be an integer >= 1`);
  }
  return { ...v };
}

const isShare = (v) => typeof v === 'number' && v > 0 && v <= 1;

// other_apps_use: the requests other apps make in each window of a bucket, which this org's
// headers count and its limits enforce (DOCS rl-global-mgmt: the limits are org-wide, every
// app's calls together; rl2-token-oauth: one app's share is only a ceiling). Either a number
// in [0, 1), that fraction of every bucket's limit, or {"<bucket>": n} with n a whole count
// (>= 0) or a fraction in (0, 1) of that bucket's limit. Throws.
function parseOtherUse(v, where) {
  if (typeof v === 'number') {
    if (!(v >= 0 && v < 1)) throw new Error(`${where} as a number must be a fraction in [0, 1)`);
    return v;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${where} must be a fraction or an object`);
  for (const [bucket, n] of Object.entries(v)) {
    if (!(bucket in WORKFORCE_LIMITS)) throw new Error(`${where}: unknown bucket ${bucket}`);
    if (!(isInt(n, 0) || (typeof n === 'number' && n > 0 && n < 1))) {
      throw new Error(`${where}.${bucket} must be a whole count >= 0 or a fraction in (0, 1)`);
    }
  }
  return { ...v };
}

// rate_window_seconds: null for windows on wall-clock minutes, else a whole number of seconds.
const isWindow = (v) => v === null || isInt(v, 1);
// Where /api/v1/apps/{id}/<more> is counted: Okta's table (the apps bucket) or the old rule
// (the default /api/v1 bucket, as oktadpop's src/ratelimit.c counted it).
const APPS_SUBPATH_BUCKETS = ['/api/v1/apps', '/api/v1'];

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
    if (!isInt(v, min)) die(`config.${name} must be an integer >= ${min}`);
    return v;
  };
  const strings = (v) => v && v.every((s) => typeof s === 'string');
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
    if (!strings(scopes)) die(`config.clients[${i}].scopes must be an array of strings`);
    const grants = c.grant_scopes === undefined ? scopes : asArray(c.grant_scopes);
    if (!strings(grants)) die(`config.clients[${i}].grant_scopes must be an array of strings`);
    const role = c.admin_role === undefined ? 'SUPER_ADMIN' : c.admin_role;
    if (!ADMIN_ROLES.includes(role)) die(`config.clients[${i}].admin_role must be one of ${ADMIN_ROLES.join(', ')}`);
    if (c.app_share !== undefined && !isShare(c.app_share)) die(`config.clients[${i}].app_share must be a number in (0, 1]`);
    clients.set(c.client_id, {
      client_id: c.client_id,
      jwks: jose.createLocalJWKSet({ keys }),
      scopes: new Set(scopes), // the scopes the org AS has for this client
      grants: new Set(grants), // the app's grants collection: what a token can hold
      dpop_required: c.dpop_required === undefined ? true : !!c.dpop_required,
      admin_role: role,
      app_share: c.app_share ?? null, // this app's own share, over config.app_share
    });
  }
  // rate_limit: N sets every bucket; rate_limits then overrides single ones.
  const rateLimits = { ...WORKFORCE_LIMITS };
  if (raw.rate_limit !== undefined) {
    const n = intOpt('rate_limit', 1, 1);
    for (const b of Object.keys(rateLimits)) rateLimits[b] = n;
  }
  try {
    Object.assign(rateLimits, parseRateLimits(raw.rate_limits === undefined ? {} : raw.rate_limits, 'config.rate_limits'));
  } catch (e) {
    die(e.message);
  }
  const appShare = raw.app_share === undefined ? 0.5 : raw.app_share;
  if (!isShare(appShare)) die('config.app_share must be a number in (0, 1]');
  const clockSkew = raw.clock_skew === undefined ? 0 : raw.clock_skew;
  if (!Number.isInteger(clockSkew)) die('config.clock_skew must be an integer (seconds)');
  const windowSeconds = raw.rate_window_seconds === undefined ? null : raw.rate_window_seconds;
  if (!isWindow(windowSeconds)) die('config.rate_window_seconds must be null or an integer >= 1');
  let otherUse;
  try {
    otherUse = parseOtherUse(raw.other_apps_use === undefined ? {} : raw.other_apps_use, 'config.other_apps_use');
  } catch (e) {
    die(e.message);
  }
  const rateHeaders = raw.rate_limit_headers === undefined ? true : raw.rate_limit_headers;
  if (typeof rateHeaders !== 'boolean') die('config.rate_limit_headers must be true or false');
  const appsSubpath = raw.apps_subpath_bucket === undefined ? '/api/v1/apps' : raw.apps_subpath_bucket;
  if (!APPS_SUBPATH_BUCKETS.includes(appsSubpath)) die(`config.apps_subpath_bucket must be one of ${APPS_SUBPATH_BUCKETS.join(', ')}`);
  return {
    clients,
    users: intOpt('users', 450, 0),
    groups: intOpt('groups', 30, 0),
    token_lifetime: intOpt('token_lifetime', 3600, 1),
    rs_nonce: !!raw.rs_nonce,
    rate_limits: rateLimits,
    app_share: appShare,
    rate_window_seconds: windowSeconds,
    other_apps_use: otherUse,
    rate_limit_headers: rateHeaders,
    apps_subpath_bucket: appsSubpath,
    concurrency_limit: intOpt('concurrency_limit', 75, 1), // Workforce, DOCS rl-additional-limits
    latency_ms: intOpt('latency_ms', 0, 0),
    log_events: intOpt('log_events', 0, 0),
    clock_skew: opts.clockSkew ?? clockSkew,
  };
}

const config = loadConfig(opts.config);

// ===========================================================================
// 3. Small helpers
// ===========================================================================

// The emulator's clock: real time + the configured skew. Every check it makes
// and the Date header it sends use it, so a client can be tested against an
// org whose clock is off.
const nowMs = () => Date.now() + state.clockSkew * 1000;
const nowSec = () => Math.floor(nowMs() / 1000);
const currentDate = () => new Date(nowMs());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
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

const iso = (ms) => (ms === null ? null : new Date(ms).toISOString());

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

// ---- SCIM-style filter expressions ---------------------------------------
//
// The filter/search languages of /api/v1/users, groups, apps and logs:
// `attr op "value"` joined with and/or (and binds tighter), parentheses
// allowed; `pr` takes no value. Each endpoint then checks which attributes
// and operators it supports.

class FilterError extends Error {
  constructor(message, badOp = null, pos = null) { super(message); this.badOp = badOp; this.pos = pos; }
}

const FILTER_OPS = ['eq', 'co', 'sw', 'pr', 'gt', 'ge', 'lt', 'le'];

function tokenizeFilter(text) {
  const toks = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (/\s/.test(c)) { i++; continue; }
    if (c === '(' || c === ')') { toks.push({ type: c, pos: i }); i++; continue; }
    if (c === '"') {
      let s = '';
      let j = i + 1;
      for (; j < text.length && text[j] !== '"'; j++) s += text[j] === '\\' && j + 1 < text.length ? text[++j] : text[j];
      if (j >= text.length) throw new FilterError('unterminated string');
      toks.push({ type: 'string', text: s, pos: i });
      i = j + 1;
      continue;
    }
    const m = /^[^\s()"]+/.exec(text.slice(i));
    toks.push({ type: 'word', text: m[0], pos: i });
    i += m[0].length;
  }
  return toks;
}

// Returns the expression tree: {and:[l,r]} | {or:[l,r]} | {attr, op, value}.
function parseFilter(text) {
  const toks = tokenizeFilter(text);
  let i = 0;
  const isWord = (t, w) => t && t.type === 'word' && t.text.toLowerCase() === w;
  function term() {
    const t = toks[i++];
    if (!t) throw new FilterError('unexpected end of expression');
    if (t.type === '(') {
      const e = orExpr();
      if (!toks[i] || toks[i].type !== ')') throw new FilterError('missing )');
      i++;
      return e;
    }
    if (t.type !== 'word') throw new FilterError(`expected an attribute at position ${t.pos}`);
    const opTok = toks[i++];
    if (!opTok || opTok.type !== 'word') throw new FilterError(`expected an operator after ${t.text}`);
    const op = opTok.text.toLowerCase();
    if (!FILTER_OPS.includes(op)) throw new FilterError(`unknown operator ${opTok.text}`, opTok.text, opTok.pos);
    if (op === 'pr') return { attr: t.text, op };
    const v = toks[i++];
    if (!v || (v.type !== 'string' && v.type !== 'word')) throw new FilterError(`expected a value after ${opTok.text}`);
    let value = v.text;
    if (v.type === 'word') {
      if (v.text === 'true' || v.text === 'false') value = v.text === 'true';
      else if (v.text === 'null') value = null;
      else if (/^-?\d+(\.\d+)?$/.test(v.text)) value = Number(v.text);
      else throw new FilterError(`values must be quoted: ${v.text}`);
    }
    return { attr: t.text, op, value };
  }
  function andExpr() {
    let l = term();
    while (isWord(toks[i], 'and')) { i++; l = { and: [l, term()] }; }
    return l;
  }
  function orExpr() {
    let l = andExpr();
    while (isWord(toks[i], 'or')) { i++; l = { or: [l, andExpr()] }; }
    return l;
  }
  const e = orExpr();
  if (i < toks.length) throw new FilterError(`unexpected ${toks[i].text || toks[i].type} at position ${toks[i].pos}`);
  return e;
}

function* filterTerms(e) {
  if (e.and || e.or) for (const s of e.and || e.or) yield* filterTerms(s);
  else yield e;
}

// Every value at a dotted path; arrays on the way are searched element-wise
// (so `target.id eq "x"` matches any target).
function valuesAt(obj, attr) {
  let vals = [obj];
  for (const key of attr.split('.')) {
    const next = [];
    for (const v of vals) {
      if (v === null || typeof v !== 'object') continue;
      const x = v[key];
      if (Array.isArray(x)) next.push(...x); else if (x !== undefined) next.push(x);
    }
    vals = next;
  }
  return vals;
}

const ISO_DATE = /^\d{4}-\d\d-\d\dT/;
const ORDER = { gt: (a, b) => a > b, ge: (a, b) => a >= b, lt: (a, b) => a < b, le: (a, b) => a <= b };

// Strings compare case-insensitively; ISO dates as instants.
function compareTerm(op, actual, want) {
  if (op === 'pr') return actual !== null && actual !== '';
  if (typeof actual === 'string' && typeof want === 'string') {
    const a = actual.toLowerCase();
    const w = want.toLowerCase();
    if (op === 'eq') return a === w;
    if (op === 'sw') return a.startsWith(w);
    if (op === 'co') return a.includes(w);
    if (ISO_DATE.test(actual) && ISO_DATE.test(want)) return ORDER[op](Date.parse(actual), Date.parse(want));
    return ORDER[op](a, w);
  }
  if (op === 'eq') return actual === want;
  if (typeof actual === 'number' && typeof want === 'number' && ORDER[op]) return ORDER[op](actual, want);
  return false;
}

function matchesFilter(e, obj) {
  if (e.and) return e.and.every((s) => matchesFilter(s, obj));
  if (e.or) return e.or.some((s) => matchesFilter(s, obj));
  const vals = valuesAt(obj, e.attr);
  if (e.op === 'pr') return vals.some((v) => compareTerm('pr', v));
  return vals.some((v) => compareTerm(e.op, v, e.value));
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
  clockSkew: config.clock_skew,
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
  // rate limiting
  rateOverrides: {}, // control rate_limits: bucket -> limit, over config.rate_limits
  appShare: config.app_share,
  appShares: {}, // control app_shares: client_id -> share, over clients[].app_share
  windowSeconds: config.rate_window_seconds, // null: wall-clock minutes
  otherUse: config.other_apps_use,
  rateLimitHeaders: config.rate_limit_headers,
  appsSubpathBucket: config.apps_subpath_bucket,
  concurrencyLimit: config.concurrency_limit,
  latencyMs: config.latency_ms,
  windows: new Map(), // bucket -> { start, end (epoch s), count, byClient: Map(client_id -> n) }
  inFlight: 0,
  lastConcurrencyEvent: -Infinity, // ms of the last System Log concurrency violation
  stats: null, // see resetStats()
};

function resetStats() {
  state.windows.clear();
  state.stats = { in_flight_peak: state.inFlight, count_429: 0, concurrency_429: 0, buckets: new Map() };
}
resetStats();

// ---- directory data -------------------------------------------------------
//
// Deterministic users. User i (1-based):
//   id        00u + i zero-padded to 15 digits, e.g. 00u000000000000001
//   profile   firstName/lastName from fixed lists, email = login = user{i}@example.com
//   status    ACTIVE, with a password
//   created   2016-01-01 + i days; activated/statusChanged/passwordChanged = created + 1 h
//   lastLogin (relative to today 00:00 UTC, so "stale" stays stale over time)
//             i % 45 == 0           -> null (never logged in)            10 of 450
//             else i % 9 == 0        -> 2 to 3 years ago                  40 of 450
//             else i % 7 == 0        -> 100 to 179 days ago               51 of 450
//             else                   -> 1 to 30 days ago
//   groups    Everyone, and every group g >= 2 with i % g == 0
//   factors   push if i is odd, Google TOTP if i % 3 == 0, SMS if i % 5 == 0,
//             email if i % 4 == 0 (so user 2 has none); push is
//             PENDING_ACTIVATION when i % 13 == 0, everything else ACTIVE
const FIRST_NAMES = ['Ada', 'Alan', 'Grace', 'Linus', 'Barbara', 'Dennis', 'Ken', 'Margaret', 'Edsger', 'Donald',
  'Frances', 'John', 'Radia', 'Tim', 'Hedy', 'Claude', 'Katherine', 'Vint', 'Shafi', 'Leslie'];
const LAST_NAMES = ['Lovelace', 'Turing', 'Hopper', 'Torvalds', 'Liskov', 'Ritchie', 'Thompson', 'Hamilton',
  'Dijkstra', 'Knuth', 'Allen', 'McCarthy', 'Perlman', 'Berners-Lee', 'Lamarr', 'Shannon', 'Johnson', 'Cerf',
  'Goldwasser', 'Lamport'];
const DAY_MS = 86400000;
const HOUR_MS = 3600000;
const SEED_EPOCH = Date.UTC(2016, 0, 1);

const pad15 = (n) => String(n).padStart(15, '0');
const userId = (n) => '00u' + pad15(n);
const groupId = (n) => '00g' + pad15(n);
const appId = (n) => '0oa' + pad15(n);
const firstName = (i) => FIRST_NAMES[(i - 1) % FIRST_NAMES.length];
const lastName = (i) => LAST_NAMES[Math.floor((i - 1) / FIRST_NAMES.length) % LAST_NAMES.length];

const users = new Map(); // id -> user record; insertion order == id order (ids only grow)
const loginIndex = new Map(); // lower-case login -> id
let nextUserNum = 1;
const groups = new Map(); // id -> group record, id order
const members = new Map(); // group id -> Set(user id)
let nextGroupNum = 1;
const apps = new Map(); // id -> app record
const appUsers = new Map(); // app id -> Map(user id -> direct assignment)
const appGroups = new Map(); // app id -> Map(group id -> group assignment)
const factors = new Map(); // user id -> [factor]
const EVERYONE = groupId(1);

function seedUsers(count) {
  const now = new Date(nowMs());
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  for (let i = 1; i <= count; i++) {
    const created = SEED_EPOCH + i * DAY_MS + (i % 24) * HOUR_MS;
    const activated = created + HOUR_MS;
    let lastLogin;
    if (i % 45 === 0) lastLogin = null;
    else if (i % 9 === 0) lastLogin = today - (730 + ((i * 13) % 400)) * DAY_MS + (i % 24) * HOUR_MS;
    else if (i % 7 === 0) lastLogin = today - (100 + (i % 80)) * DAY_MS + (i % 24) * HOUR_MS;
    else lastLogin = today - ((i % 30) + 1) * DAY_MS + (i % 24) * HOUR_MS;
    const email = `user${i}@example.com`;
    const u = addUser({
      num: i,
      status: 'ACTIVE',
      hasPassword: true,
      created, activated, statusChanged: activated, lastLogin, lastUpdated: activated, passwordChanged: activated,
      profile: { firstName: firstName(i), lastName: lastName(i), mobilePhone: null, secondEmail: null, login: email, email },
    });
    for (const g of members.keys()) {
      const n = Number(g.slice(3));
      if (n >= 2 && i % n === 0) members.get(g).add(u.id);
    }
    seedFactors(u, i, activated);
  }
}

function addUser(rec) {
  rec.id = userId(rec.num);
  users.set(rec.id, rec);
  loginIndex.set(String(rec.profile.login).toLowerCase(), rec.id);
  nextUserNum = Math.max(nextUserNum, rec.num + 1);
  if (members.has(EVERYONE)) members.get(EVERYONE).add(rec.id);
  return rec;
}

// The second DELETE: the user and everything that points at it go.
function deleteUser(rec) {
  users.delete(rec.id);
  loginIndex.delete(String(rec.profile.login).toLowerCase());
  for (const set of members.values()) set.delete(rec.id);
  for (const m of appUsers.values()) m.delete(rec.id);
  factors.delete(rec.id);
}

// By id, then login (case-insensitive: Okta logins that differ only in case
// are not unique), then an unambiguous login shortname (DOCS api/users "Get
// user"). A '/' (sent as %2F) never matches: Okta cannot fetch such logins.
function findUser(key) {
  if (key.includes('/')) return undefined;
  const byId = users.get(key) || users.get(loginIndex.get(key.toLowerCase()));
  if (byId) return byId;
  const short = [...users.values()].filter((u) => String(u.profile.login).split('@')[0].toLowerCase() === key.toLowerCase());
  return short.length === 1 ? short[0] : undefined;
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
    // Password values are write-only: a set password comes back as {} (DOCS api/users).
    credentials: { ...(u.hasPassword ? { password: {} } : {}), provider: { type: 'OKTA', name: 'OKTA' } },
    _links: { self: { href: `${base}/api/v1/users/${u.id}` } },
  };
}

function seedGroups(count) {
  for (let i = 1; i <= count; i++) {
    // Like a real org, the first group is the built-in "Everyone".
    const everyone = i === 1;
    addGroup({
      num: i,
      created: SEED_EPOCH + i * DAY_MS,
      lastUpdated: SEED_EPOCH + i * DAY_MS,
      lastMembershipUpdated: SEED_EPOCH + i * DAY_MS + HOUR_MS,
      type: everyone ? 'BUILT_IN' : 'OKTA_GROUP',
      profile: everyone
        ? { name: 'Everyone', description: 'All users in your organization' }
        : { name: `Group ${i}`, description: `Test group number ${i}` },
    });
  }
}

function addGroup(rec) {
  rec.id = groupId(rec.num);
  groups.set(rec.id, rec);
  members.set(rec.id, new Set());
  nextGroupNum = Math.max(nextGroupNum, rec.num + 1);
  return rec;
}

function renderGroup(g, base) {
  return {
    id: g.id,
    created: iso(g.created),
    lastUpdated: iso(g.lastUpdated),
    lastMembershipUpdated: iso(g.lastMembershipUpdated),
    objectClass: ['okta:user_group'],
    type: g.type,
    profile: g.profile,
    _links: { self: { href: `${base}/api/v1/groups/${g.id}` }, users: { href: `${base}/api/v1/groups/${g.id}/users` } },
  };
}

// A few apps like a real org has (the first two are Okta's own). Salesforce is
// assigned to every tenth user and to group 3; Slack to Everyone.
const APP_SEEDS = [
  { name: 'saasure', label: 'Okta Admin Console', signOnMode: 'OPENID_CONNECT', status: 'ACTIVE' },
  { name: 'okta_enduser', label: 'Okta Dashboard', signOnMode: 'OPENID_CONNECT', status: 'ACTIVE' },
  { name: 'salesforce', label: 'Salesforce.com', signOnMode: 'SAML_2_0', status: 'ACTIVE' },
  { name: 'slack', label: 'Slack', signOnMode: 'SAML_2_0', status: 'ACTIVE' },
  { name: 'bookmark', label: 'Team Wiki', signOnMode: 'BOOKMARK', status: 'INACTIVE' },
];

function seedApps() {
  for (const [k, s] of APP_SEEDS.entries()) {
    const id = appId(k + 1);
    const created = SEED_EPOCH + (k + 1) * HOUR_MS;
    apps.set(id, { id, ...s, created, lastUpdated: created, kid: `seed-signing-key-${k + 1}` });
    appUsers.set(id, new Map());
    appGroups.set(id, new Map());
  }
  const salesforce = appId(3);
  for (const u of users.values()) {
    if (u.num % 10 === 0) appUsers.get(salesforce).set(u.id, { scope: 'USER', created: u.created, lastUpdated: u.created, profile: {} });
  }
  if (groups.has(groupId(3))) appGroups.get(salesforce).set(groupId(3), { priority: 0, lastUpdated: SEED_EPOCH, profile: {} });
  if (groups.has(EVERYONE)) appGroups.get(appId(4)).set(EVERYONE, { priority: 0, lastUpdated: SEED_EPOCH, profile: {} });
}

function renderApp(a, base) {
  const self = `${base}/api/v1/apps/${a.id}`;
  return {
    id: a.id,
    name: a.name,
    label: a.label,
    status: a.status,
    created: iso(a.created),
    lastUpdated: iso(a.lastUpdated),
    accessibility: { selfService: false, errorRedirectUrl: null, loginRedirectUrl: null },
    visibility: { autoSubmitToolbar: false, hide: { iOS: false, web: false } },
    features: [],
    signOnMode: a.signOnMode,
    credentials: { userNameTemplate: { template: '${source.login}', type: 'BUILT_IN' }, signing: { kid: a.kid } },
    settings: { app: {} },
    _links: { self: { href: self }, users: { href: `${self}/users` }, groups: { href: `${self}/groups` } },
  };
}

// The users of an app: direct assignments (scope USER) and the members of
// its groups (scope GROUP); a direct assignment wins. In id order.
function appUserList(a) {
  const out = new Map();
  for (const gid of appGroups.get(a.id).keys()) {
    for (const uid of members.get(gid) || []) out.set(uid, { scope: 'GROUP', created: a.created, lastUpdated: a.created, profile: {} });
  }
  for (const [uid, asg] of appUsers.get(a.id)) out.set(uid, asg);
  return [...out.entries()].filter(([uid]) => users.has(uid)).sort(([x], [y]) => (x < y ? -1 : 1))
    .map(([uid, asg]) => ({ id: uid, user: users.get(uid), ...asg }));
}

function renderAppUser(a, au, base) {
  return {
    id: au.id,
    externalId: null,
    created: iso(au.created),
    lastUpdated: iso(au.lastUpdated),
    scope: au.scope,
    status: 'ACTIVE',
    syncState: 'DISABLED',
    credentials: { userName: au.user.profile.login },
    profile: au.profile,
    _links: { app: { href: `${base}/api/v1/apps/${a.id}` }, user: { href: `${base}/api/v1/users/${au.id}` } },
  };
}

function renderAppGroup(a, gid, asg, base) {
  return {
    id: gid,
    lastUpdated: iso(asg.lastUpdated),
    priority: asg.priority,
    profile: asg.profile,
    _links: { app: { href: `${base}/api/v1/apps/${a.id}` }, group: { href: `${base}/api/v1/groups/${gid}` } },
  };
}

// UserFactor objects (PY-UserFactorApi); ids keep Okta's prefixes.
const FACTOR_KINDS = [
  { when: (i) => i % 2 === 1, prefix: 'opf', factorType: 'push', provider: 'OKTA', vendorName: 'OKTA' },
  { when: (i) => i % 3 === 0, prefix: 'uft', factorType: 'token:software:totp', provider: 'GOOGLE', vendorName: 'GOOGLE' },
  { when: (i) => i % 5 === 0, prefix: 'mbl', factorType: 'sms', provider: 'OKTA', vendorName: 'OKTA' },
  { when: (i) => i % 4 === 0, prefix: 'emf', factorType: 'email', provider: 'OKTA', vendorName: 'OKTA' },
];

function seedFactors(u, i, enrolled) {
  const list = FACTOR_KINDS.filter((k) => k.when(i)).map((k) => ({
    id: k.prefix + pad15(i),
    factorType: k.factorType,
    provider: k.provider,
    vendorName: k.vendorName,
    status: k.factorType === 'push' && i % 13 === 0 ? 'PENDING_ACTIVATION' : 'ACTIVE',
    created: enrolled,
    lastUpdated: enrolled,
    profile: k.factorType === 'sms' ? { phoneNumber: `+1-555-01${String(i % 100).padStart(2, '0')}` }
      : k.factorType === 'email' ? { email: u.profile.email }
        : k.factorType === 'push' ? { name: `Phone of ${u.profile.firstName}`, platform: 'IOS' } : { credentialId: u.profile.login },
  }));
  factors.set(u.id, list);
}

function renderFactor(u, f, base) {
  const self = `${base}/api/v1/users/${u.id}/factors/${f.id}`;
  return {
    id: f.id, factorType: f.factorType, provider: f.provider, vendorName: f.vendorName, status: f.status,
    created: iso(f.created), lastUpdated: iso(f.lastUpdated), profile: f.profile,
    _links: { self: { href: self }, user: { href: `${base}/api/v1/users/${u.id}` } },
  };
}

// ---- System Log -----------------------------------------------------------
//
// Events in persistence order (seq 1, 2, ...); published never decreases
// with seq. Each is a LogEvent (DOCS api/system-log "LogEvent object").
const logEvents = [];

const LOG_TEMPLATES = [
  { eventType: 'user.session.start', displayMessage: 'User login to Okta', severity: 'INFO', result: 'SUCCESS' },
  { eventType: 'user.authentication.sso', displayMessage: 'User single sign on to app', severity: 'INFO', result: 'SUCCESS', target: 'app' },
  { eventType: 'user.session.start', displayMessage: 'User login to Okta', severity: 'WARN', result: 'FAILURE', reason: 'INVALID_CREDENTIALS' },
  { eventType: 'user.lifecycle.create', displayMessage: 'Create okta user', severity: 'INFO', result: 'SUCCESS', target: 'user', byApp: true },
  { eventType: 'group.user_membership.add', displayMessage: 'Add user to group membership', severity: 'INFO', result: 'SUCCESS', target: 'group', byApp: true },
  { eventType: 'policy.evaluate_sign_on', displayMessage: 'Evaluation of sign-on policy', severity: 'INFO', result: 'ALLOW' },
  { eventType: 'user.lifecycle.deactivate', displayMessage: 'Deactivate Okta user', severity: 'INFO', result: 'SUCCESS', target: 'user', byApp: true },
  { eventType: 'application.user_membership.add', displayMessage: 'Add user to application membership', severity: 'INFO', result: 'SUCCESS', target: 'app', byApp: true },
];
// DOCS rl-additional-limits: the first concurrency violation every 60 s is logged.
const CONCURRENCY_EVENT = { eventType: 'core.concurrency.org.limit.violation', displayMessage: 'Too many requests in flight', severity: 'WARN', result: 'DENY' };

function makeEvent(seq, ms, t) {
  const h = crypto.createHash('sha256').update(`log-event-${seq}`).digest('hex');
  const uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
  const n = ((seq * 7) % 450) + 1;
  const user = { id: userId(n), type: 'User', alternateId: `user${n}@example.com`, displayName: `${firstName(n)} ${lastName(n)}`, detailEntry: null };
  const app = { id: appId(3), type: 'AppInstance', alternateId: 'Salesforce.com', displayName: 'Salesforce.com', detailEntry: null };
  const service = { id: '0oaservice0000000001', type: 'PublicClientApp', alternateId: 'oktadpop', displayName: 'oktadpop', detailEntry: null };
  const group = { id: groupId((seq % 29) + 2), type: 'UserGroup', alternateId: 'unknown', displayName: `Group ${(seq % 29) + 2}`, detailEntry: null };
  const target = { user: [user], app: [app, user], group: [user, group] }[t.target] || [];
  return {
    uuid,
    published: iso(ms),
    eventType: t.eventType,
    version: '0',
    severity: t.severity,
    legacyEventType: null,
    displayMessage: t.displayMessage,
    actor: t.byApp ? service : user,
    client: {
      userAgent: { rawUserAgent: 'Mozilla/5.0 (X11; Linux x86_64)', os: 'Linux', browser: 'CHROME' },
      zone: 'null', device: 'Computer', id: null, ipAddress: `198.51.100.${(seq % 250) + 1}`,
      geographicalContext: { city: 'San Francisco', state: 'California', country: 'United States', postalCode: '94105',
        geolocation: { lat: 37.79, lon: -122.39 } },
    },
    device: null,
    outcome: { result: t.result, reason: t.reason || null },
    target,
    transaction: { type: 'WEB', id: `tx${h.slice(0, 22)}`, detail: {} },
    debugContext: { debugData: { requestId: `req${h.slice(22, 44)}`, requestUri: '/api/v1/authn', url: '/api/v1/authn?' } },
    authenticationContext: { authenticationProvider: null, credentialProvider: null, credentialType: null, issuer: null,
      interface: null, authenticationStep: 0, externalSessionId: `idx${h.slice(44, 64)}` },
    securityContext: { asNumber: null, asOrg: null, isp: null, domain: null, isProxy: null },
  };
}

function appendEvent(ms, t) {
  const seq = logEvents.length + 1;
  logEvents.push({ seq, ms, event: makeEvent(seq, ms, t || LOG_TEMPLATES[(seq - 1) % LOG_TEMPLATES.length]) });
}

// config.log_events: spread over the past hour, oldest first.
function seedLogEvents(count) {
  const now = nowMs();
  for (let k = 1; k <= count; k++) appendEvent(now - HOUR_MS + Math.floor((k * HOUR_MS) / (count + 1)));
}

seedGroups(config.groups);
seedUsers(config.users);
seedApps();
seedLogEvents(config.log_events);

// ===========================================================================
// 5. HTTP responses and Okta's error shapes
// ===========================================================================

// Everything a handler needs about the request being served.
//   ctx = { req, res, entry, base, path, query, params, body, kind, rateHeaders,
//           clientHint, scope, extraHeaders }

// Okta error bodies: { status, code, summary } fixtures, each from its source.
const E = {
  // okta/okta-auth-js test/support/xhr/error-throttle.js; DOCS rl-best-practices, api/system-log
  RATE_LIMIT: { status: 429, code: 'E0000047', summary: 'API call exceeded rate limit due to too many requests.' },
  // terraform-provider-okta#494, DefGuard/defguard#3556 (real bodies: no trailing period)
  NO_PERMISSION: { status: 403, code: 'E0000006', summary: 'You do not have permission to perform the requested action' },
  // DOCS reference/error-codes: E0000008 404
  NO_PATH: { status: 404, code: 'E0000008', summary: 'The requested path was not found' },
  // DOCS reference/error-codes: E0000011 401; okta-sdk-golang TestParseOktaErrorSuccess (captured body)
  INVALID_TOKEN: { status: 401, code: 'E0000011', summary: 'Invalid token provided' },
  // DOCS reference/error-codes: E0000009 500 "Internal Server Error"
  SERVER_ERROR: { status: 500, code: 'E0000009', summary: 'Internal Server Error' },
  // DOCS reference/error-codes: E0000022 (405)
  BAD_METHOD: { status: 405, code: 'E0000022', summary: 'The endpoint does not support the provided HTTP method' },
  // DOCS reference/error-codes: E0000003
  BAD_JSON: { status: 400, code: 'E0000003', summary: 'The request body was not well-formed.' },
  // DOCS reference/error-codes: E0000018
  BAD_MEDIA: { status: 415, code: 'E0000018', summary: 'Bad request.  Accept and/or Content-Type headers likely do not match supported values.' },
  // DOCS reference/error-codes: "Api validation failed: {0}"; causes name the field
  validation: (what) => ({ status: 400, code: 'E0000001', summary: `Api validation failed: ${what}` }),
  // DOCS api/users "Not found: Resource not found: <id> (User)"; the type varies by resource
  notFound: (id, type) => ({ status: 404, code: 'E0000007', summary: `Not found: Resource not found: ${id} (${type})` }),
  // DOCS api/users (reactivate), support.okta.com "This operation is not allowed in user's current status"
  BAD_STATUS: { status: 403, code: 'E0000038', summary: "This operation is not allowed in the user's current status" },
  // CloudRunnerInc/oktasdk-python tests/UsersClientTest.py (fixture grade)
  ALREADY_ACTIVE: { status: 403, code: 'E0000016', summary: 'Activation failed because the user is already active' },
  // CloudRunnerInc/oktasdk-python tests/UsersClientTest.py (fixture grade); cause "The user is not locked out."
  NOT_LOCKED: { status: 403, code: 'E0000032', summary: 'Unlock is not allowed for this user.' },
  // The emulator's answer to a filter/search it cannot parse (Okta's text for this case is undocumented).
  BAD_SEARCH: { status: 400, code: 'E0000031', summary: 'Invalid search criteria.' },
  // DOCS api/system-log: operator/field combinations a search does not support
  badOperator: (op, attr) => ({ status: 400, code: 'E0000031',
    summary: `The supplied combination of operator and field is not currently supported. Operator: ${op}, Field: ${attr}` }),
  // DOCS api/system-log: "Invalid filter 'display_message eqq ...': Unrecognized attribute operator 'eqq' at position 16. ..."
  logBadOperator: (filter, op, pos) => ({ status: 400, code: 'E0000053',
    summary: `Invalid filter '${filter}': Unrecognized attribute operator '${op}' at position ${pos}. Expected: ${FILTER_OPS.join(',')}` }),
  // Same code for a filter that does not parse at all (Okta's wording for that is undocumented).
  logBadFilter: (filter, why) => ({ status: 400, code: 'E0000053', summary: `Invalid filter '${filter}': ${why}` }),
  // DOCS api/system-log (E0000053, 400)
  LOG_SINCE_TOO_OLD: { status: 400, code: 'E0000053', summary: 'Invalid parameter: The since parameter is over 180 days prior to the current day.' },
  // DOCS api/system-log: the 'until' example, the same shape for 'since'
  logBadDate: (p) => ({ status: 400, code: 'E0000001',
    summary: `Api validation failed: '${p}': The date format in your query is not recognized. Please enter dates using ISO8601 string format.. '${p}': must be a valid date-time or empty.` }),
  // DOCS api/system-log
  LOG_Q_TOO_LONG: { status: 400, code: 'E0000001',
    summary: "Api validation failed: 'q': Freeform search cannot contain items longer than 40 characters. Please shorten the items in your search or use an advanced filter to query by specific fields." },
};
// DOCS api/system-log "Timeouts": "A timeout returns the HTTP 500 error with the message:" (exactly these two fields).
const QUERY_TIMEOUT_BODY = {
  errorCode: 'E0000009',
  errorSummary: "Your last request took too long to complete. This is likely due to a load issue on our side. We've logged this and will work to address it. Please either simplify your query or wait a few minutes and try again.",
};

function send(ctx, status, body, headers = {}) {
  const { res, entry } = ctx;
  if (res.headersSent || res.writableEnded) return;
  let payload = '';
  const h = {
    'X-Okta-Request-Id': randomToken(18),
    Date: currentDate().toUTCString(),
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
  // rate_limit_headers = false: a gateway in front of the org strips the X-Rate-Limit-*
  // headers from every answer (429s too); the limits themselves still apply.
  if (!state.rateLimitHeaders) for (const k of Object.keys(h)) if (/^x-rate-limit-/i.test(k)) delete h[k];
  if (status === 429) state.stats.count_429++;
  if (entry) {
    entry.status = status;
    if (body && typeof body === 'object' && !Buffer.isBuffer(body)) entry.error = body.error || body.errorCode || null;
  }
  res.writeHead(status, h);
  res.end(status === 204 ? undefined : payload);
}

// Okta management API error body (DOCS core-okta-api "Errors").
function oktaErr(ctx, e, causes = [], headers = {}) {
  send(ctx, e.status, { errorCode: e.code, errorSummary: e.summary, errorLink: e.code, errorId: newErrorId(), errorCauses: causes },
    headers);
}
const causes = (...summaries) => summaries.map((errorSummary) => ({ errorSummary }));

// OAuth 2.0 error body (authorization server).
function oauthError(ctx, status, error, description, headers = {}) {
  send(ctx, status, { error, error_description: description }, { 'Cache-Control': 'no-store', Pragma: 'no-cache', ...headers });
}

// WWW-Authenticate parameter values must not contain a double quote.
const q = (s) => `"${String(s).replace(/["\\]/g, "'")}"`;

// ===========================================================================
// 6. Rate limits and concurrency (DOCS rl-global-mgmt, rl-best-practices,
//    rl2-token-oauth, rl-additional-limits)
// ===========================================================================

// The bucket of a request: collections and single objects of users, groups
// and apps have their own buckets (GET of one user apart from writes to it),
// logs and events their own; the rest of /api/v1 shares the default bucket.
// Apps: DOCS rl-global-mgmt counts "`/api/v1/apps` except `/api/v1/apps/{id}`"
// against the apps limit (the current page: "Calls to the /api/v1/apps endpoint
// and all other endpoints of the form /api/v1/apps*"), so /api/v1/apps/{id}/users
// and the like are in /api/v1/apps (100 a minute on Workforce), unless
// apps_subpath_bucket is "/api/v1", the rule oktadpop's src/ratelimit.c had
// (everything deeper in /api/v1). Users and groups keep that rule here.
const OWN_BUCKETS = ['users', 'groups', 'apps', 'logs', 'events'];
function bucketOf(method, p) {
  if (!p.startsWith('/api/v1/')) return p.startsWith('/oauth2/') ? '/oauth2' : '/';
  const rest = p.slice('/api/v1/'.length);
  const slash = rest.indexOf('/');
  const seg = slash < 0 ? rest : rest.slice(0, slash);
  const tail = slash < 0 ? '' : rest.slice(slash + 1);
  if (OWN_BUCKETS.includes(seg)) {
    if (slash < 0 || tail === '') return `/api/v1/${seg}`;
    if (['users', 'groups', 'apps'].includes(seg) && !tail.includes('/')) {
      return `${seg === 'users' && method === 'GET' ? 'GET ' : ''}/api/v1/${seg}/{id}`;
    }
    if (seg === 'apps') return state.appsSubpathBucket;
  }
  return '/api/v1';
}

const limitOf = (bucket) => state.rateOverrides[bucket] ?? config.rate_limits[bucket];
const effectiveLimits = () => ({ ...config.rate_limits, ...state.rateOverrides });

// The client a request counts against, for the per-app share: the unverified
// issuer of a client assertion, or cid of an access token (verified later).
function peekClientId(ctx) {
  try {
    if (ctx.kind === 'token') {
      const a = jose.decodeJwt(new URLSearchParams(ctx.body.toString('utf8')).get('client_assertion') || '');
      return typeof a.iss === 'string' ? a.iss : null;
    }
    const m = /^\S+ +(\S+)/.exec(ctx.req.headers.authorization || '');
    const t = m && jose.decodeJwt(m[1]);
    return t && typeof t.cid === 'string' ? t.cid : null;
  } catch {
    return null;
  }
}

// Answers 429 E0000047. Whatever proof or assertion the request carried is
// used up: Okta consumed the proof jti of a request it answered 429, so a
// client that resends it gets "already been used" (okta-sdk-golang#554,
// terraform-provider-okta#2392).
function tooManyRequests(ctx, headers) {
  consumePresentedJtis(ctx);
  ctx.rateHeaders = headers;
  oktaErr(ctx, E.RATE_LIMIT);
}

// Concurrency: at most concurrencyLimit token/API requests in flight, all
// clients together. A refused request answers at once and is not counted.
// Concurrent-limit headers are always 0/0 and an estimated reset
// (DOCS rl-best-practices "Example rate limit header with concurrent rate
// limit"); the body is undocumented, E0000047 is assumed.
function admitConcurrent(ctx) {
  if (state.inFlight >= state.concurrencyLimit) {
    const now = nowMs();
    if (now - state.lastConcurrencyEvent >= 60000) {
      state.lastConcurrencyEvent = now;
      appendEvent(now, CONCURRENCY_EVENT);
    }
    state.stats.concurrency_429++;
    tooManyRequests(ctx, { 'X-Rate-Limit-Limit': '0', 'X-Rate-Limit-Remaining': '0', 'X-Rate-Limit-Reset': String(nowSec() + 1) });
    return false;
  }
  state.inFlight++;
  state.stats.in_flight_peak = Math.max(state.stats.in_flight_peak, state.inFlight);
  // In flight until the answer is written (res.end, once latency_ms has passed) or the stream
  // is gone: counting down on 'finish' or 'close' comes later and races the client's next request.
  let released = false;
  const release = () => { if (!released) { released = true; state.inFlight--; } };
  const end = ctx.res.end.bind(ctx.res);
  ctx.res.end = (...args) => { release(); return end(...args); };
  ctx.res.on('close', release);
  return true;
}

function bucketStats(bucket) {
  let s = state.stats.buckets.get(bucket);
  if (!s) { s = { peak_used: 0, peak_used_by_client: {}, count_429: 0, windows: 0 }; state.stats.buckets.set(bucket, s); }
  return s;
}

// The requests other apps have made in each window of a bucket (other_apps_use).
function otherUseOf(bucket, limit) {
  const o = state.otherUse;
  const v = typeof o === 'number' ? o : (o[bucket] ?? 0);
  return Number.isInteger(v) ? v : Math.floor(v * limit);
}

// The share of a bucket's window one client may use: control app_shares, then
// the client's own clients[].app_share, then app_share (DOCS rl2-token-oauth:
// 50% by default, changed per app in the Admin Console or with the principal
// rate limits API, whose defaultPercentage covers every bucket).
function shareOf(cid) {
  if (cid && state.appShares[cid] !== undefined) return state.appShares[cid];
  const c = cid && config.clients.get(cid);
  return c && c.app_share !== null ? c.app_share : state.appShare;
}

// The bucket's current window, begun anew once the last one has ended. By default
// windows are wall-clock minutes (floor(now/60)). With rate_window_seconds N, each
// window starts at the first request after the last one ended (at that whole second
// of the emulator's clock) and lasts N seconds: DOCS rate-limits "Most rate limits
// reset every 60 seconds, though they aren't necessarily synchronized with wall clock
// minutes", and DOCS rl2-limits has limits per 10 s and per second. Either way
// X-Rate-Limit-Reset is the window's real end.
function windowOf(bucket) {
  const now = nowSec();
  let w = state.windows.get(bucket);
  if (!w || now >= w.end || now < w.start) {
    const len = state.windowSeconds ?? 60;
    const start = state.windowSeconds === null ? Math.floor(now / 60) * 60 : now;
    w = { start, end: start + len, count: 0, byClient: new Map() };
    state.windows.set(bucket, w);
    bucketStats(bucket).windows++;
  }
  return w;
}

// Per-bucket windows (windowOf); Reset is the end of the window (DOCS
// rl2-monitor: "the remainder of the one-minute interval"). Remaining counts
// what every app used: this org's admitted requests plus other_apps_use, and a
// request past the limit of that total is refused. One client may use at most
// its share of a bucket's window (shareOf). Which numbers the headers show when
// that share is what refuses a request is undocumented; we report the whole
// (org-wide) bucket, which is what the headers show otherwise.
// Only admitted requests count. Sets ctx.rateHeaders, or answers 429.
function admitRate(ctx) {
  const bucket = bucketOf(ctx.req.method, ctx.path);
  const limit = limitOf(bucket);
  if (limit === undefined) return true;
  const w = windowOf(bucket);
  const other = otherUseOf(bucket, limit);
  const cid = ctx.clientHint;
  const share = Math.max(1, Math.floor(limit * shareOf(cid)));
  const headers = (used) => ({
    'X-Rate-Limit-Limit': String(limit),
    'X-Rate-Limit-Remaining': String(Math.max(0, limit - used)),
    'X-Rate-Limit-Reset': String(w.end),
  });
  if (other + w.count >= limit || (cid && (w.byClient.get(cid) || 0) >= share)) {
    bucketStats(bucket).count_429++;
    tooManyRequests(ctx, headers(other + w.count));
    return false;
  }
  w.count++;
  const s = bucketStats(bucket);
  s.peak_used = Math.max(s.peak_used, w.count);
  if (cid) {
    const n = (w.byClient.get(cid) || 0) + 1;
    w.byClient.set(cid, n);
    s.peak_used_by_client[cid] = Math.max(s.peak_used_by_client[cid] || 0, n);
  }
  ctx.rateHeaders = headers(other + w.count);
  return true;
}

function statsSnapshot() {
  const buckets = {};
  for (const [bucket, limit] of Object.entries(effectiveLimits())) {
    const s = state.stats.buckets.get(bucket) || { peak_used: 0, peak_used_by_client: {}, count_429: 0, windows: 0 };
    buckets[bucket] = { limit, peak_used: s.peak_used, peak_used_by_client: s.peak_used_by_client,
      other_apps_use: otherUseOf(bucket, limit), count_429: s.count_429, windows: s.windows };
  }
  return { in_flight_peak: state.stats.in_flight_peak, count_429: state.stats.count_429,
    concurrency_429: state.stats.concurrency_429, buckets };
}

// ===========================================================================
// 7. DPoP proof validation (RFC 9449 section 4.3)
// ===========================================================================

class ProofError extends Error {}

// Okta's error_description texts for invalid proofs. Okta publishes few of
// them; the known ones are quoted with their source, the others follow the
// pattern of the known "'htu' claim in the DPoP proof JWT is invalid.".
const PROOF_TEXT = {
  // okta-sdk-dotnet#697, terraform-provider-okta#1904
  missing: 'The DPoP proof JWT header is missing.',
  // okta-sdk-dotnet#758 (no leading "The"). Two DPoP headers reach Okta as one
  // "a, b" field, which does not parse either.
  unparseable: 'DPoP proof JWT cannot be parsed.',
  // terraform-provider-okta#2392, okta-sdk-golang#554, Okta blog 2024-09-10-angular-dpop-jwt
  replayed: 'The DPoP proof JWT has already been used.',
  // okta-sdk-nodejs#453, Okta blog 2024-09-10-angular-dpop-jwt
  htu: "'htu' claim in the DPoP proof JWT is invalid.",
  // Only source a third-party fixture "captured live" (unverified); it sets the 5-minute window.
  stale: 'The DPoP proof JWT is issued more than five minutes in the past.',
  // Undocumented texts, in the pattern above.
  claim: (c) => `'${c}' claim in the DPoP proof JWT is invalid.`,
  header: (h) => `'${h}' header in the DPoP proof JWT is invalid.`,
  signature: 'The DPoP proof JWT signature is invalid.',
  binding: 'The DPoP proof JWT key does not match the access token.',
};
const PROOF_MAX_AGE = 300; // seconds in the past (PROOF_TEXT.stale)
const PROOF_MAX_AHEAD = 60; // seconds in the future

// The DPoP header values of a request, one per header line. rawHeaders keeps
// repeated headers apart on HTTP/1.1 and HTTP/2 alike (Http2ServerRequest has
// no headersDistinct).
function dpopHeaders(req) {
  const vals = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() === 'dpop') vals.push(req.rawHeaders[i + 1]);
  }
  return vals;
}

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
  if (vals.length === 0 || vals[0].trim() === '') throw new ProofError(PROOF_TEXT.missing);
  if (vals.length > 1) throw new ProofError(PROOF_TEXT.unparseable);
  const proof = vals[0].trim();
  let header;
  try {
    if (proof.split('.').length !== 3) throw new Error('not a compact JWS');
    header = jose.decodeProtectedHeader(proof);
    jose.decodeJwt(proof);
  } catch {
    throw new ProofError(PROOF_TEXT.unparseable);
  }
  if (header.typ !== 'dpop+jwt') throw new ProofError(PROOF_TEXT.header('typ'));
  if (!ASYMMETRIC_ALGS.includes(header.alg)) throw new ProofError(PROOF_TEXT.header('alg'));
  const jwk = header.jwk;
  // The jwk must be a public RSA or EC key.
  if (!jwk || typeof jwk !== 'object' || Array.isArray(jwk) || PRIVATE_JWK_MEMBERS.some((m) => m in jwk)
      || (jwk.kty !== 'RSA' && jwk.kty !== 'EC')) {
    throw new ProofError(PROOF_TEXT.header('jwk'));
  }
  let key;
  try { key = await jose.importJWK(jwk, header.alg); } catch { throw new ProofError(PROOF_TEXT.header('jwk')); }
  let payload;
  try {
    ({ payload } = await jose.jwtVerify(proof, key, { algorithms: [header.alg], typ: 'dpop+jwt', currentDate: currentDate() }));
  } catch (e) {
    if (e.code === 'ERR_JWT_EXPIRED') throw new ProofError(PROOF_TEXT.claim('exp'));
    if (e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') throw new ProofError(PROOF_TEXT.claim(e.claim));
    throw new ProofError(PROOF_TEXT.signature);
  }

  const { jti, htm, htu, iat } = payload;
  if (typeof jti !== 'string' || jti === '') throw new ProofError(PROOF_TEXT.claim('jti'));
  // Wrong htm: by analogy with htu (notes: no Okta sample; okta-sdk-dotnet#852 confirms 400 + empty body).
  if (htm !== expect.htm) throw new ProofError(PROOF_TEXT.claim('htm'));
  if (typeof htu !== 'string') throw new ProofError(PROOF_TEXT.htu);
  // The authorization server ignores a query/fragment in htu (RFC 9449); the
  // resource server compares htu literally, so a query there fails.
  const htuCmp = expect.stripHtuQuery ? htu.replace(/[?#].*$/s, '') : htu;
  if (htuCmp !== expect.htu) throw new ProofError(PROOF_TEXT.htu);
  const now = nowSec();
  if (typeof iat !== 'number' || !Number.isFinite(iat) || iat > now + PROOF_MAX_AHEAD) throw new ProofError(PROOF_TEXT.claim('iat'));
  if (iat < now - PROOF_MAX_AGE) throw new ProofError(PROOF_TEXT.stale);

  if (expect.accessToken !== undefined && payload.ath !== sha256b64url(expect.accessToken)) {
    throw new ProofError(PROOF_TEXT.claim('ath'));
  }
  const jkt = await jose.calculateJwkThumbprint(jwk, 'sha256');
  if (expect.jkt !== undefined && jkt !== expect.jkt) throw new ProofError(PROOF_TEXT.binding);
  if (state.proofJtis.has(jti)) throw new ProofError(PROOF_TEXT.replayed);
  // Keep it until the iat window has surely passed for this proof.
  state.proofJtis.add(jti, Math.max(iat, now) + PROOF_MAX_AGE + PROOF_MAX_AHEAD);
  return { payload, jwk, jkt };
}

// ===========================================================================
// 8. Authorization server: POST /oauth2/v1/token
// ===========================================================================

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

// Okta's invalid_client texts (all answered 401, like Okta).
const ASSERTION_TEXT = {
  // Okta's generic answer for an unknown client (Okta org AS)
  unknownClient: 'Client authentication failed. Either the client or the client credentials are invalid.',
  // ClientCredentialsStrategy test mocks and a lab log (notes: 401)
  expired: 'The client_assertion token is expired.',
  // terraform-provider-okta#2579; DOCS: exp "must be a maximum of only an hour in the future"
  tooFar: 'The client_assertion token has an expiration too far into the future.',
  // lab log (weak source, 401)
  replayed: 'The client_assertion token has already been used.',
  // a lab log's paraphrase; Okta's exact text for a future iat is unknown
  future: 'The client_assertion token must be issued before current time.',
  // okta-sdk-python#289
  kid: 'The client_assertion JWT kid is invalid.',
  // okta-sdk-dotnet#600
  aud: 'The audience claim for client_assertion must be the endpoint invoked for the request.',
};

// Scope answers of the org AS.
// A scope the AS does not have for the client: Okta's widely captured
// invalid_scope text (e.g. Spring's "[invalid_scope] One or more scopes are not
// configured for the authorization server resource.").
const SCOPE_NOT_CONFIGURED = 'One or more scopes are not configured for the authorization server resource.';
// None of the requested scopes granted: okta-sdk-golang PR#246 (400 in a lab log).
const NO_SCOPE_GRANTED = 'You are not allowed any of the requested scopes.';

function assertionErrorDescription(e) {
  switch (e.code) {
    case 'ERR_JWT_EXPIRED': return ASSERTION_TEXT.expired;
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return 'The client_assertion signature is invalid.';
    case 'ERR_JWKS_NO_MATCHING_KEY': return ASSERTION_TEXT.kid;
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return 'The client_assertion alg is not allowed.';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.reason === 'missing') return `The '${e.claim}' claim is required in the client_assertion.`;
      if (e.claim === 'aud') return ASSERTION_TEXT.aud;
      if (e.claim === 'sub' || e.claim === 'iss') return 'The issuer [iss] and subject [sub] claims must both be the client_id.';
      if (e.claim === 'nbf') return 'The client_assertion token is not yet valid.';
      return `The '${e.claim}' claim of the client_assertion is invalid.`;
    default: return 'The client_assertion is invalid.';
  }
}

async function handleToken(ctx) {
  const { req } = ctx;
  if (req.method !== 'POST') return oktaErr(ctx, E.BAD_METHOD, [], { Allow: 'POST' });
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
  if (!assertion) return oauthError(ctx, 401, 'invalid_client', ASSERTION_TEXT.unknownClient);
  if (form.get('client_assertion_type') !== JWT_BEARER) {
    return oauthError(ctx, 400, 'invalid_client', `The client_assertion_type must be ${JWT_BEARER}.`);
  }
  let unverified;
  try { unverified = jose.decodeJwt(assertion); } catch {
    return oauthError(ctx, 400, 'invalid_client', 'The client_assertion is not a well-formed JWT.');
  }
  const client = typeof unverified.iss === 'string' ? config.clients.get(unverified.iss) : undefined;
  if (!client) return oauthError(ctx, 401, 'invalid_client', ASSERTION_TEXT.unknownClient);
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
      currentDate: currentDate(),
    }));
  } catch (e) {
    return oauthError(ctx, 401, 'invalid_client', assertionErrorDescription(e));
  }
  const now = nowSec();
  if (typeof claims.jti !== 'string' || claims.jti === '') {
    return oauthError(ctx, 401, 'invalid_client', "The 'jti' claim is required in the client_assertion.");
  }
  // Okta refuses assertions living longer than an hour.
  if (claims.exp - now > 3600 + 5 || (typeof claims.iat === 'number' && claims.exp - claims.iat > 3600)) {
    return oauthError(ctx, 401, 'invalid_client', ASSERTION_TEXT.tooFar);
  }
  if (typeof claims.iat === 'number' && claims.iat > now + 60) {
    return oauthError(ctx, 401, 'invalid_client', ASSERTION_TEXT.future);
  }
  const jtiKey = `${client.client_id}\u0000${claims.jti}`;
  if (state.assertionJtis.has(jtiKey)) return oauthError(ctx, 401, 'invalid_client', ASSERTION_TEXT.replayed);
  // Consumed now, before the DPoP nonce check: like Okta, an assertion sent
  // with a nonce-less proof cannot be sent again.
  state.assertionJtis.add(jtiKey, claims.exp + 60);

  // ---- scopes: unknown ones fail; the rest shrink to the app's grants
  // ("validates all of the requested scopes ... against the service app's
  // grants collection", Okta service-app guide; a token with fewer scopes:
  // terraform-provider-okta#2375, okta-sdk-golang#145).
  const scopeParam = (form.get('scope') || '').trim();
  if (!scopeParam) {
    // requests/requests-oauthlib#463
    return oauthError(ctx, 400, 'invalid_scope',
      "The authorization server resource does not have any configured default scopes, 'scope' must be provided.");
  }
  const requested = [...new Set(scopeParam.split(/ +/))];
  if (requested.some((s) => !client.scopes.has(s))) return oauthError(ctx, 400, 'invalid_scope', SCOPE_NOT_CONFIGURED);
  const granted = requested.filter((s) => client.grants.has(s));
  if (granted.length === 0) return oauthError(ctx, 400, 'consent_required', NO_SCOPE_GRANTED);

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
      // DOCS guides/dpop: 400 use_dpop_nonce with a dpop-nonce header
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
    scp: granted,
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
    // RFC 6749 section 3.3: the scope actually granted
    scope: granted.join(' '),
  }, headers);
}

function handleKeys(ctx) {
  if (ctx.req.method !== 'GET') return oktaErr(ctx, E.BAD_METHOD, [], { Allow: 'GET' });
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
// 9. Resource server: /api/v1/* authentication and routing
// ===========================================================================

// Okta's challenges: status, error and description; the body is always empty
// (okta-sdk-golang#554 "an empty body and a generic 400", #145 "no body",
// okta-sdk-dotnet#795, #852).
const RS = {
  // okta-sdk-dotnet#795 (401, empty body), okta-blog-archive PR#1653 ("The access token is invalid")
  INVALID_TOKEN: { status: 401, error: 'invalid_token', description: 'The access token is invalid.' },
  // Okta blog 2024-09-10-angular-dpop-jwt: a DPoP-bound token sent as Bearer (scheme Bearer, no algs)
  REQUIRES_DPOP: { status: 400, error: 'invalid_request', description: 'The resource request requires a DPoP proof.' },
  // terraform-provider-okta#2375 (403), okta-sdk-golang#145
  INSUFFICIENT_SCOPE: { status: 403, error: 'insufficient_scope', description: 'The access token provided does not contain the required scopes.' },
  // terraform-provider-okta#2392, okta-sdk-nodejs#453: 400; the description is the proof's fault
  badProof: (description) => ({ status: 400, error: 'invalid_dpop_proof', description }),
  // RFC 9449 section 9 (Okta itself asks no RS nonce: DOCS guides/dpop oktaresourceserver)
  USE_NONCE: { status: 401, error: 'use_dpop_nonce', description: 'Resource server requires nonce in DPoP proof' },
};

// WWW-Authenticate in Okta's parameter order (terraform-provider-okta#2392,
// okta-sdk-nodejs#453): algs (DPoP scheme only), authorization_uri, realm,
// scope (the one the route requires), error, error_description, resource (the
// request path). Okta's samples show http:// URLs; the base is kept as served.
function challenge(ctx, scheme, c) {
  const parts = [];
  if (scheme === 'DPoP') parts.push(`algs="${ASYMMETRIC_ALGS.join(' ')}"`);
  parts.push(`authorization_uri=${q(`${ctx.base}/oauth2/v1/authorize`)}`, `realm=${q(ctx.base)}`);
  if (ctx.scope) parts.push(`scope=${q(ctx.scope)}`);
  parts.push(`error=${q(c.error)}`, `error_description=${q(c.description)}`, `resource=${q(ctx.path)}`);
  return `${scheme} ${parts.join(', ')}`;
}

function rsChallenge(ctx, scheme, c, headers = {}) {
  ctx.entry.error = c.error;
  send(ctx, c.status, null, { ...ctx.extraHeaders, 'WWW-Authenticate': challenge(ctx, scheme, c), ...headers });
}

// Returns the verified access token claims, or null after answering.
async function authenticateApi(ctx) {
  const { req } = ctx;
  const m = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+) +(\S+) *$/.exec(req.headers.authorization || '');
  const scheme = m ? m[1].toLowerCase() : '';
  if (scheme !== 'dpop' && scheme !== 'bearer') { rsChallenge(ctx, 'DPoP', RS.INVALID_TOKEN); return null; }
  const challengeScheme = scheme === 'dpop' ? 'DPoP' : 'Bearer';
  ctx.challengeScheme = challengeScheme;
  const token = m[2];
  let claims;
  try {
    ({ payload: claims } = await jose.jwtVerify(token, signing.publicKey, {
      algorithms: ['ES256'], issuer: ctx.base, audience: ctx.base, requiredClaims: ['exp', 'jti'], currentDate: currentDate(),
    }));
  } catch {
    rsChallenge(ctx, challengeScheme, RS.INVALID_TOKEN);
    return null;
  }
  if (state.revokedTokens.has(claims.jti)) { rsChallenge(ctx, challengeScheme, RS.INVALID_TOKEN); return null; }
  const jkt = claims.cnf && claims.cnf.jkt;
  if (!jkt) {
    if (scheme === 'dpop') { rsChallenge(ctx, 'DPoP', RS.INVALID_TOKEN); return null; }
    return claims; // plain Bearer token from a non-DPoP client
  }
  if (scheme === 'bearer') { rsChallenge(ctx, 'Bearer', RS.REQUIRES_DPOP); return null; }
  // htu is compared with the percent-DECODED request path, like Okta
  // (okta-sdk-nodejs#521, okta-sdk-python#541), in the form Okta's Java SDK sends and a live
  // org accepts: every escape decoded, then % space " # escaped again (okta-sdk-java
  // DPoPInterceptor.getUriWithoutQueryString, PRs #1526/#1528).
  let decodedPath;
  try { decodedPath = decodeURIComponent(ctx.path); } catch { decodedPath = ctx.path; }
  decodedPath = decodedPath.replace(/%/g, '%25').replace(/ /g, '%20').replace(/"/g, '%22').replace(/#/g, '%23');
  let proof;
  try {
    proof = await verifyProof(req, { htm: req.method, htu: ctx.base + decodedPath, accessToken: token, jkt });
  } catch (e) {
    if (!(e instanceof ProofError)) throw e;
    rsChallenge(ctx, 'DPoP', RS.badProof(e.message));
    return null;
  }
  if (state.rsNonceMode) {
    if (!state.rsNonce.accepts(proof.payload.nonce)) {
      rsChallenge(ctx, 'DPoP', RS.USE_NONCE, { 'DPoP-Nonce': state.rsNonce.current });
      return null;
    }
    ctx.extraHeaders['DPoP-Nonce'] = state.rsNonce.current;
  }
  return claims;
}

// Scopes per endpoint family ([SPEC] okta-management-openapi-spec security):
// reads take read or manage, writes manage; factors are users'.
function scopesFor(family, method) {
  if (family === 'logs') return ['okta.logs.read'];
  return method === 'GET' ? [`okta.${family}.read`, `okta.${family}.manage`] : [`okta.${family}.manage`];
}

// What an admin role may do once the scope is granted; past it Okta answers
// E0000006 (hashicorp/vault#5922: Read Only Admin writing). GROUP_ADMIN is
// simplified to all users and groups (Okta limits it to the groups it
// administers) and nothing else.
const ROLE_PERMITS = {
  SUPER_ADMIN: () => true,
  READ_ONLY_ADMIN: (method) => method === 'GET',
  GROUP_ADMIN: (method, family) => family === 'users' || family === 'groups',
};

// Route table: pattern segments (":x" captures one segment, percent-decoded).
const route = (family, pattern, methods) => ({ family, pattern, methods });
const ROUTES = [
  route('users', ['users'], { GET: listUsers, POST: createUser }),
  route('users', ['users', ':id'], { GET: getUser, POST: updateUser, PUT: replaceUser, DELETE: removeUser }),
  route('users', ['users', ':id', 'groups'], { GET: listUserGroups }),
  route('users', ['users', ':id', 'lifecycle', ':op'], { POST: lifecycleUser }),
  route('users', ['users', ':id', 'factors'], { GET: listFactors }),
  route('users', ['users', ':id', 'factors', ':fid'], { DELETE: unenrollFactor }),
  route('groups', ['groups'], { GET: listGroups, POST: createGroup }),
  route('groups', ['groups', ':id'], { GET: getGroup }),
  route('groups', ['groups', ':id', 'users'], { GET: listGroupUsers }),
  route('groups', ['groups', ':id', 'users', ':uid'], { PUT: addGroupMember, DELETE: removeGroupMember }),
  route('apps', ['apps'], { GET: listApps }),
  route('apps', ['apps', ':id'], { GET: getApp }),
  route('apps', ['apps', ':id', 'users'], { GET: listAppUsers, POST: assignAppUser }),
  route('apps', ['apps', ':id', 'users', ':uid'], { DELETE: unassignAppUser }),
  route('apps', ['apps', ':id', 'groups'], { GET: listAppGroups }),
  route('apps', ['apps', ':id', 'groups', ':gid'], { PUT: assignAppGroup, DELETE: unassignAppGroup }),
  route('logs', ['logs'], { GET: listLogs }),
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

// Order of checks: the token (401), the proof (400), the RS nonce (401), the
// path (404) and method (405), the scope (403 challenge), the admin role
// (403 E0000006), then the handler.
async function handleApi(ctx) {
  ctx.extraHeaders = {};
  const m = ctx.path.startsWith('/api/v1/') ? matchRoute(ctx.path.slice('/api/v1/'.length).split('/')) : null;
  const method = ctx.req.method;
  const handler = m && m.route.methods[method];
  if (m) ctx.scope = scopesFor(m.route.family, handler ? method : Object.keys(m.route.methods)[0])[0];
  const claims = await authenticateApi(ctx);
  if (!claims) return;
  ctx.entry.client_id = claims.cid || null;
  if (!m) return apiError(ctx, E.NO_PATH);
  if (!handler) return oktaErr(ctx, E.BAD_METHOD, [], { Allow: Object.keys(m.route.methods).join(', '), ...ctx.extraHeaders });
  const granted = Array.isArray(claims.scp) ? claims.scp : [];
  if (!scopesFor(m.route.family, method).some((s) => granted.includes(s))) {
    return rsChallenge(ctx, ctx.challengeScheme, RS.INSUFFICIENT_SCOPE);
  }
  const client = config.clients.get(claims.cid);
  if (!ROLE_PERMITS[client ? client.admin_role : 'SUPER_ADMIN'](method, m.route.family)) return apiError(ctx, E.NO_PERMISSION);
  ctx.params = m.params;
  return handler(ctx);
}

// Answers from API handlers carry the RS nonce header when in nonce mode.
const apiSend = (ctx, status, body, headers = {}) => send(ctx, status, body, { ...ctx.extraHeaders, ...headers });
const apiError = (ctx, e, errorCauses = []) => oktaErr(ctx, e, errorCauses, ctx.extraHeaders);

// limit: the endpoint's default and maximum; larger values are clamped, like
// Okta. Returns null after answering a bad value.
function pageLimit(ctx, dflt, max) {
  const raw = ctx.query.get('limit');
  if (raw === null || raw === '') return dflt;
  if (!/^\d+$/.test(raw) || Number(raw) < 1) {
    apiError(ctx, E.validation('limit'), causes('limit: must be a positive integer'));
    return null;
  }
  return Math.min(max, Number(raw));
}

// A Link query: the given parameters first, then the other ones of `query`.
function linkQuery(query, set) {
  const params = Object.entries(set).filter(([, v]) => v !== null && v !== undefined);
  for (const [k, v] of query) if (!(k in set)) params.push([k, v]);
  return params.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
}

const linkOrigin = (ctx) => (ctx.nextOffOrigin ? 'https://evil.example.com' : ctx.base);

// Cursor pagination over items ordered by id; `after` is the last id of the
// previous page (opaque to clients, DOCS api/users). Sends two separate Link
// header lines like Okta; the last page has no next link. paged = false:
// one page, no next link (q searches).
function sendPage(ctx, items, render, { dflt = 200, max = 200, paged = true } = {}) {
  const limit = pageLimit(ctx, dflt, max);
  if (limit === null) return;
  const after = paged ? ctx.query.get('after') : null;
  const start = after ? items.findIndex((it) => it.id > after) : 0;
  const page = start < 0 ? [] : items.slice(start, start + limit);
  const more = paged && start >= 0 && start + limit < items.length;
  const links = [`<${ctx.base}${ctx.path}?${linkQuery(ctx.query, { after, limit })}>; rel="self"`];
  if (more) links.push(`<${linkOrigin(ctx)}${ctx.path}?${linkQuery(ctx.query, { after: page[page.length - 1].id, limit })}>; rel="next"`);
  apiSend(ctx, 200, page.map(render), { Link: links });
}

// Parses the query parameter `name` as a filter whose every term passes
// check(term) (true, or false for an unsupported field/operator). Returns the
// tree, null when absent, or undefined after answering an error.
function queryFilter(ctx, name, check) {
  const text = ctx.query.get(name);
  if (text === null) return null;
  let tree;
  try { tree = parseFilter(text); } catch (e) {
    if (!(e instanceof FilterError)) throw e;
    apiError(ctx, E.BAD_SEARCH);
    return undefined;
  }
  for (const t of filterTerms(tree)) {
    if (!check(t)) { apiError(ctx, E.badOperator(t.op, t.attr)); return undefined; }
  }
  return tree;
}

function readJson(ctx, { optional = false } = {}) {
  if (optional && ctx.body.length === 0) return {};
  const ctype = String(ctx.req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (ctype !== 'application/json') { apiError(ctx, E.BAD_MEDIA); return undefined; }
  let v;
  try { v = JSON.parse(ctx.body.toString('utf8')); } catch { v = undefined; }
  if (!v || typeof v !== 'object' || Array.isArray(v)) { apiError(ctx, E.BAD_JSON); return undefined; }
  return v;
}

const isObject = (v) => v && typeof v === 'object' && !Array.isArray(v);

// ===========================================================================
// 10. Users, lifecycle, factors (DOCS api/users, [SPEC], [PY-*])
// ===========================================================================

const ORDER_OPS = ['gt', 'ge', 'lt', 'le'];
// filter: eq only, lastUpdated also gt/ge/lt/le, on these fields (DOCS api/users).
const USER_FILTER_FIELDS = ['status', 'lastUpdated', 'id', 'profile.login', 'profile.email', 'profile.firstName', 'profile.lastName'];
const userFilterOk = (t) => USER_FILTER_FIELDS.includes(t.attr) && (t.op === 'eq' || (t.attr === 'lastUpdated' && ORDER_OPS.includes(t.op)));
// search: any profile attribute and these; eq, sw, co (co only on four profile fields), pr, ranges; no ne.
const USER_SEARCH_FIELDS = ['id', 'status', 'created', 'activated', 'statusChanged', 'lastUpdated', 'type.id'];
const USER_CO_FIELDS = ['profile.firstName', 'profile.lastName', 'profile.email', 'profile.login'];
const userSearchOk = (t) => (USER_SEARCH_FIELDS.includes(t.attr) || t.attr.startsWith('profile.'))
  && (t.op !== 'co' || USER_CO_FIELDS.includes(t.attr));

function listUsers(ctx) {
  const render = (u) => renderUser(u, ctx.base);
  let list = [...users.values()];
  const qParam = ctx.query.get('q');
  if (qParam !== null) {
    // "Find users": startsWith on login, email, firstName, lastName; no
    // DEPROVISIONED; default limit 10; no pagination (DOCS api/users).
    const p = qParam.toLowerCase();
    list = list.filter((u) => u.status !== 'DEPROVISIONED'
      && ['login', 'email', 'firstName', 'lastName'].some((f) => String(u.profile[f] ?? '').toLowerCase().startsWith(p)));
    return sendPage(ctx, list, render, { dflt: 10, paged: false });
  }
  const filter = queryFilter(ctx, 'filter', userFilterOk);
  if (filter === undefined) return;
  const search = queryFilter(ctx, 'search', userSearchOk);
  if (search === undefined) return;
  // Without filter or search, DEPROVISIONED users are left out ([PY-UserApi]).
  if (!filter && !search) list = list.filter((u) => u.status !== 'DEPROVISIONED');
  for (const tree of [filter, search]) if (tree) list = list.filter((u) => matchesFilter(tree, render(u)));
  sendPage(ctx, list, render);
}

const userNotFound = (ctx, id = ctx.params.id) => apiError(ctx, E.notFound(id, 'User'));

function getUser(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  apiSend(ctx, 200, renderUser(u, ctx.base));
}

const DUPLICATE_LOGIN = causes('login: An object with this field already exists in the current organization');

function loginTaken(login, exceptId) {
  const id = loginIndex.get(String(login).toLowerCase());
  return id !== undefined && id !== exceptId;
}

const passwordGiven = (credentials) => isObject(credentials) && isObject(credentials.password)
  && ['value', 'hash', 'hook'].some((k) => k in credentials.password);

// POST /api/v1/users?activate=true|false: 200 (not 201). activate=false ->
// STAGED; activated with a password -> ACTIVE (PASSWORD_EXPIRED with
// nextLogin=changePassword); without one -> PROVISIONED (DOCS api/users).
function createUser(ctx) {
  const body = readJson(ctx);
  if (body === undefined) return;
  const profile = body.profile;
  if (!isObject(profile) || typeof profile.login !== 'string' || profile.login.trim() === '') {
    return apiError(ctx, E.validation('login'), causes('login: The field cannot be left blank'));
  }
  if (loginTaken(profile.login)) return apiError(ctx, E.validation('login'), DUPLICATE_LOGIN);
  const groupIds = body.groupIds === undefined ? [] : body.groupIds;
  if (!Array.isArray(groupIds) || groupIds.length > 20 || groupIds.some((g) => !groups.has(g))) {
    return apiError(ctx, E.validation('groupIds'), causes('groupIds: must list at most 20 existing groups'));
  }
  const activate = ctx.query.get('activate') !== 'false'; // Okta's default is true
  const hasPassword = passwordGiven(body.credentials);
  const status = !activate ? 'STAGED' : !hasPassword ? 'PROVISIONED'
    : ctx.query.get('nextLogin') === 'changePassword' ? 'PASSWORD_EXPIRED' : 'ACTIVE';
  const now = nowMs();
  const u = addUser({
    num: nextUserNum,
    status,
    hasPassword,
    created: now,
    activated: status === 'ACTIVE' ? now : null,
    statusChanged: activate ? now : null,
    lastLogin: null,
    lastUpdated: now,
    passwordChanged: hasPassword ? now : null,
    profile: { firstName: null, lastName: null, mobilePhone: null, secondEmail: null, email: null, ...profile },
  });
  for (const g of groupIds) members.get(g).add(u.id);
  factors.set(u.id, []);
  apiSend(ctx, 200, renderUser(u, ctx.base));
}

// POST is a partial update, PUT replaces the profile ("Any property not
// specified in the request is deleted"); a DEPROVISIONED user cannot be
// updated (403 E0000038, support.okta.com).
function updateUser(ctx) { return writeUser(ctx, false); }
function replaceUser(ctx) { return writeUser(ctx, true); }

function writeUser(ctx, replace) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  const body = readJson(ctx);
  if (body === undefined) return;
  if (u.status === 'DEPROVISIONED') return apiError(ctx, E.BAD_STATUS);
  if (body.profile !== undefined && !isObject(body.profile)) return apiError(ctx, E.validation('profile'));
  const profile = replace ? { ...body.profile } : { ...u.profile, ...(body.profile || {}) };
  if (typeof profile.login !== 'string' || profile.login.trim() === '') {
    return apiError(ctx, E.validation('login'), causes('login: The field cannot be left blank'));
  }
  if (loginTaken(profile.login, u.id)) return apiError(ctx, E.validation('login'), DUPLICATE_LOGIN);
  const now = nowMs();
  loginIndex.delete(String(u.profile.login).toLowerCase());
  u.profile = profile;
  loginIndex.set(String(profile.login).toLowerCase(), u.id);
  if (passwordGiven(body.credentials)) { u.hasPassword = true; u.passwordChanged = now; }
  u.lastUpdated = now;
  apiSend(ctx, 200, renderUser(u, ctx.base));
}

function setStatus(u, status) {
  u.status = status;
  u.statusChanged = u.lastUpdated = nowMs();
  if (status === 'ACTIVE') u.activated = u.statusChanged;
}

// Okta: DELETE on a user that is not DEPROVISIONED deactivates it; a second
// DELETE removes it for good. Both answer 204 (DOCS api/users).
function removeUser(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  if (u.status !== 'DEPROVISIONED') setStatus(u, 'DEPROVISIONED');
  else deleteUser(u);
  apiSend(ctx, 204, null);
}

function listUserGroups(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  apiSend(ctx, 200, [...groups.values()].filter((g) => members.get(g.id).has(u.id)).map((g) => renderGroup(g, ctx.base)));
}

// POST /api/v1/users/{id}/lifecycle/<op>: transitions and invalid-state
// errors per DOCS api/users and [SPEC]; each returns { body } (answered 200)
// or { error, causes? }.
const LIFECYCLE = {
  activate(ctx, u) {
    if (u.status === 'ACTIVE') return { error: E.ALREADY_ACTIVE };
    if (u.status !== 'STAGED' && u.status !== 'DEPROVISIONED') return { error: E.BAD_STATUS };
    setStatus(u, u.hasPassword ? 'ACTIVE' : 'PROVISIONED');
    // sendEmail=false hands the activation link to the caller instead.
    if (ctx.query.get('sendEmail') === 'false') {
      const token = randomAlnum(20);
      return { body: { activationUrl: `${ctx.base}/welcome/${token}`, activationToken: token } };
    }
    return { body: {} };
  },
  deactivate(ctx, u) {
    if (u.status !== 'DEPROVISIONED') setStatus(u, 'DEPROVISIONED');
    return { body: {} };
  },
  // "Passing an id that is not in the ACTIVE state returns a 400 ... E0000001" (DOCS api/users)
  suspend(ctx, u) {
    if (u.status !== 'ACTIVE') return { error: E.validation('status'), causes: causes('status: The user is not ACTIVE') };
    setStatus(u, 'SUSPENDED');
    return { body: {} };
  },
  unsuspend(ctx, u) {
    if (u.status !== 'SUSPENDED') return { error: E.validation('status'), causes: causes('status: The user is not SUSPENDED') };
    setStatus(u, 'ACTIVE');
    return { body: {} };
  },
  unlock(ctx, u) {
    if (u.status !== 'LOCKED_OUT') return { error: E.NOT_LOCKED, causes: causes('The user is not locked out.') };
    setStatus(u, 'ACTIVE');
    return { body: {} };
  },
  // The old API: tempPassword=true answers {tempPassword}, else the user.
  expire_password(ctx, u) {
    if (!expirable(u)) return { error: E.BAD_STATUS };
    setStatus(u, 'PASSWORD_EXPIRED');
    return { body: ctx.query.get('tempPassword') === 'true' ? { tempPassword: randomAlnum(12) } : renderUser(u, ctx.base) };
  },
  expire_password_with_temp_password(ctx, u) {
    if (!expirable(u)) return { error: E.BAD_STATUS };
    setStatus(u, 'PASSWORD_EXPIRED');
    return { body: { tempPassword: randomAlnum(12) } };
  },
  reset_password(ctx, u) {
    if (!expirable(u)) return { error: E.BAD_STATUS };
    setStatus(u, 'RECOVERY');
    return { body: ctx.query.get('sendEmail') === 'false' ? { resetPasswordUrl: `${ctx.base}/reset_password/${randomAlnum(20)}` } : {} };
  },
  // "The user's status remains ACTIVE"
  reset_factors(ctx, u) {
    factors.set(u.id, []);
    u.lastUpdated = nowMs();
    return { body: {} };
  },
};
const expirable = (u) => u.status !== 'STAGED' && u.status !== 'DEPROVISIONED';

function lifecycleUser(ctx) {
  const op = Object.hasOwn(LIFECYCLE, ctx.params.op) ? LIFECYCLE[ctx.params.op] : null;
  if (!op) return apiError(ctx, E.NO_PATH);
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  const r = op(ctx, u);
  if (r.error) return apiError(ctx, r.error, r.causes);
  apiSend(ctx, 200, r.body);
}

function listFactors(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  apiSend(ctx, 200, (factors.get(u.id) || []).map((f) => renderFactor(u, f, ctx.base)));
}

// "You can't unenroll a factor from a deactivated user." ([PY-UserFactorApi]; code chosen: E0000038)
function unenrollFactor(ctx) {
  const u = findUser(ctx.params.id);
  if (!u) return userNotFound(ctx);
  const list = factors.get(u.id) || [];
  const i = list.findIndex((f) => f.id === ctx.params.fid);
  if (i < 0) return apiError(ctx, E.notFound(ctx.params.fid, 'UserFactor'));
  if (u.status === 'DEPROVISIONED') return apiError(ctx, E.BAD_STATUS);
  list.splice(i, 1);
  apiSend(ctx, 204, null);
}

// ===========================================================================
// 11. Groups ([SPEC], [PY-GroupApi])
// ===========================================================================

const DATE_FIELDS = ['created', 'lastUpdated', 'lastMembershipUpdated'];
const GROUP_FILTER_FIELDS = ['id', 'type', ...DATE_FIELDS.slice(1)];
const groupFilterOk = (t) => GROUP_FILTER_FIELDS.includes(t.attr) && (t.op === 'eq' || (DATE_FIELDS.includes(t.attr) && ORDER_OPS.includes(t.op)));
const groupSearchOk = (t) => (t.attr.startsWith('profile.') || ['id', 'type', 'source.id', ...DATE_FIELDS].includes(t.attr))
  && (t.op !== 'co' || ['profile.name', 'profile.description'].includes(t.attr));

const groupNotFound = (ctx, id) => apiError(ctx, E.notFound(id, 'UserGroup'));

function listGroups(ctx) {
  const render = (g) => renderGroup(g, ctx.base);
  let list = [...groups.values()];
  const qParam = ctx.query.get('q');
  if (qParam !== null) {
    // startsWith on the name; default limit 300; cannot be paged.
    list = list.filter((g) => g.profile.name.toLowerCase().startsWith(qParam.toLowerCase()));
    return sendPage(ctx, list, render, { dflt: 300, max: 10000, paged: false });
  }
  for (const [name, check] of [['filter', groupFilterOk], ['search', groupSearchOk]]) {
    const tree = queryFilter(ctx, name, check);
    if (tree === undefined) return;
    if (tree) list = list.filter((g) => matchesFilter(tree, render(g)));
  }
  sendPage(ctx, list, render);
}

function getGroup(ctx) {
  const g = groups.get(ctx.params.id);
  if (!g) return groupNotFound(ctx, ctx.params.id);
  apiSend(ctx, 200, renderGroup(g, ctx.base));
}

// POST /api/v1/groups {profile:{name, description}}: an OKTA_GROUP, 200.
function createGroup(ctx) {
  const body = readJson(ctx);
  if (body === undefined) return;
  const profile = body.profile;
  if (!isObject(profile) || typeof profile.name !== 'string' || profile.name.trim() === '') {
    return apiError(ctx, E.validation('name'), causes('name: The field cannot be left blank'));
  }
  if ([...groups.values()].some((g) => g.profile.name.toLowerCase() === profile.name.toLowerCase())) {
    return apiError(ctx, E.validation('name'), causes('name: An object with this field already exists in the current organization'));
  }
  const now = nowMs();
  const g = addGroup({
    num: nextGroupNum, created: now, lastUpdated: now, lastMembershipUpdated: now, type: 'OKTA_GROUP',
    profile: { name: profile.name, description: typeof profile.description === 'string' ? profile.description : null },
  });
  apiSend(ctx, 200, renderGroup(g, ctx.base));
}

function listGroupUsers(ctx) {
  const g = groups.get(ctx.params.id);
  if (!g) return groupNotFound(ctx, ctx.params.id);
  const list = [...members.get(g.id)].sort().map((id) => users.get(id));
  sendPage(ctx, list, (u) => renderUser(u, ctx.base), { dflt: 1000, max: 1000 });
}

// PUT/DELETE /api/v1/groups/{gid}/users/{uid}: 204. Only OKTA_GROUP
// memberships can be changed ([PY-GroupApi]); the error for others is the
// emulator's choice (undocumented). {uid} is the user's id only: the Groups
// API's "Assign a user to a group" takes "ID of an existing Okta user"; unlike
// the Users API's own paths, no login or shortname (DOCS api/groups).
function changeMembership(ctx, add) {
  const g = groups.get(ctx.params.id);
  if (!g) return groupNotFound(ctx, ctx.params.id);
  const u = users.get(ctx.params.uid);
  if (!u) return userNotFound(ctx, ctx.params.uid);
  if (g.type !== 'OKTA_GROUP') {
    return apiError(ctx, E.validation('group'), causes(`group: Memberships of a ${g.type} group cannot be changed`));
  }
  if (add) members.get(g.id).add(u.id); else members.get(g.id).delete(u.id);
  g.lastMembershipUpdated = nowMs();
  apiSend(ctx, 204, null);
}
function addGroupMember(ctx) { return changeMembership(ctx, true); }
function removeGroupMember(ctx) { return changeMembership(ctx, false); }

// ===========================================================================
// 12. Apps ([APPS], [GO-APP], [PY-ApplicationUsersApi], [PY-ApplicationGroupsApi])
// ===========================================================================

// "Only a single expression is supported ... The only supported filter type is eq."
const APP_FILTER_FIELDS = ['id', 'name', 'status', 'user.id', 'group.id', 'credentials.signing.kid'];

const appNotFound = (ctx) => apiError(ctx, E.notFound(ctx.params.id, 'AppInstance'));

function appMatches(a, t, base) {
  if (t.attr === 'user.id') return appUserList(a).some((au) => au.id === t.value);
  if (t.attr === 'group.id') return appGroups.get(a.id).has(t.value);
  return matchesFilter(t, renderApp(a, base));
}

function listApps(ctx) {
  let list = [...apps.values()];
  const qParam = ctx.query.get('q');
  if (qParam !== null) {
    const p = qParam.toLowerCase();
    list = list.filter((a) => a.name.toLowerCase().startsWith(p) || a.label.toLowerCase().startsWith(p));
  }
  const filter = queryFilter(ctx, 'filter', (t) => APP_FILTER_FIELDS.includes(t.attr) && t.op === 'eq');
  if (filter === undefined) return;
  if (filter && (filter.and || filter.or)) return apiError(ctx, E.BAD_SEARCH);
  if (filter) list = list.filter((a) => appMatches(a, filter, ctx.base));
  // limit: default 20, maximum 200 ([APPS])
  sendPage(ctx, list, (a) => renderApp(a, ctx.base), { dflt: 20 });
}

function getApp(ctx) {
  const a = apps.get(ctx.params.id);
  if (!a) return appNotFound(ctx);
  apiSend(ctx, 200, renderApp(a, ctx.base));
}

// Default 50, up to 500 (DOCS rl-best-practices example for this endpoint).
function listAppUsers(ctx) {
  const a = apps.get(ctx.params.id);
  if (!a) return appNotFound(ctx);
  sendPage(ctx, appUserList(a), (au) => renderAppUser(a, au, ctx.base), { dflt: 50, max: 500 });
}

// POST /api/v1/apps/{id}/users {id, scope: "USER", credentials?, profile?}: 200 AppUser.
function assignAppUser(ctx) {
  const a = apps.get(ctx.params.id);
  if (!a) return appNotFound(ctx);
  const body = readJson(ctx);
  if (body === undefined) return;
  if (typeof body.id !== 'string' || body.id === '') return apiError(ctx, E.validation('id'), causes('id: The field cannot be left blank'));
  if (body.scope !== undefined && body.scope !== 'USER') return apiError(ctx, E.validation('scope'), causes('scope: must be USER'));
  const u = users.get(body.id); // the user's id only (DOCS api/apps "Assign an application user")
  if (!u) return userNotFound(ctx, body.id);
  const now = nowMs();
  const old = appUsers.get(a.id).get(u.id);
  appUsers.get(a.id).set(u.id, { scope: 'USER', created: old ? old.created : now, lastUpdated: now,
    profile: isObject(body.profile) ? body.profile : {} });
  apiSend(ctx, 200, renderAppUser(a, appUserList(a).find((au) => au.id === u.id), ctx.base));
}

// DELETE /api/v1/apps/{id}/users/{uid}: 204; only a direct assignment can go.
function unassignAppUser(ctx) {
  const a = apps.get(ctx.params.id);
  if (!a) return appNotFound(ctx);
  if (!appUsers.get(a.id).delete(ctx.params.uid)) return apiError(ctx, E.notFound(ctx.params.uid, 'AppUser'));
  apiSend(ctx, 204, null);
}

function listAppGroups(ctx) {
  const a = apps.get(ctx.params.id);
  if (!a) return appNotFound(ctx);
  const list = [...appGroups.get(a.id)].sort(([x], [y]) => (x < y ? -1 : 1)).map(([id, asg]) => ({ id, ...asg }));
  sendPage(ctx, list, (x) => renderAppGroup(a, x.id, x, ctx.base), { dflt: 20 });
}

// PUT /api/v1/apps/{id}/groups/{gid} {priority?, profile?}: 200 with the
// ApplicationGroupAssignment (not 204).
function assignAppGroup(ctx) {
  const a = apps.get(ctx.params.id);
  if (!a) return appNotFound(ctx);
  const g = groups.get(ctx.params.gid);
  if (!g) return groupNotFound(ctx, ctx.params.gid);
  const body = readJson(ctx, { optional: true });
  if (body === undefined) return;
  if (body.priority !== undefined && !isInt(body.priority, 0)) return apiError(ctx, E.validation('priority'));
  const asg = { priority: body.priority ?? appGroups.get(a.id).size, lastUpdated: nowMs(), profile: isObject(body.profile) ? body.profile : {} };
  appGroups.get(a.id).set(g.id, asg);
  apiSend(ctx, 200, renderAppGroup(a, g.id, asg, ctx.base));
}

function unassignAppGroup(ctx) {
  const a = apps.get(ctx.params.id);
  if (!a) return appNotFound(ctx);
  if (!appGroups.get(a.id).delete(ctx.params.gid)) return apiError(ctx, E.notFound(ctx.params.gid, 'ApplicationGroupAssignment'));
  apiSend(ctx, 204, null);
}

// ===========================================================================
// 13. System Log: GET /api/v1/logs (DOCS api/system-log)
// ===========================================================================
//
// Polling (no until, ASCENDING): events by persistence order after a cursor
// (or from since); a next link ALWAYS, even on an empty page. Bounded (until
// given, or DESCENDING): events with since <= published < until, in
// published order, and no next link on the last page. `after` is opaque to
// clients ("<published ms>_<seq>", the shape of DOCS core-okta-api's
// "1627500044869_1"): it resumes right after event seq. When after is given,
// a polling query ignores since.

const LOG_DEFAULT_SPAN = 7 * DAY_MS; // since defaults to 7 days before until
const LOG_MAX_AGE = 180 * DAY_MS;

const withoutKeys = (params, keys) => new URLSearchParams([...params].filter(([k]) => !keys.includes(k)));

function cursorOf(seq) {
  const ev = logEvents[seq - 1];
  return `${ev ? ev.ms : 0}_${seq}`;
}

function parseLogDate(ctx, name) {
  const raw = ctx.query.get(name);
  if (raw === null || raw === '') return null;
  const ms = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(raw) ? Date.parse(raw) : NaN;
  if (Number.isNaN(ms)) {
    apiError(ctx, E.logBadDate(name), causes(
      `${name}: The date format in your query is not recognized. Please enter dates using ISO8601 string format.`,
      `${name}: must be a valid date-time or empty.`));
    return undefined;
  }
  return ms;
}

function listLogs(ctx) {
  const qp = ctx.query;
  const rawLimit = qp.get('limit');
  if (rawLimit !== null && !/^\d+$/.test(rawLimit)) {
    return apiError(ctx, E.validation('limit'), causes('limit: must be an integer between 0 and 1000'));
  }
  const limit = rawLimit === null ? 100 : Math.min(1000, Number(rawLimit));
  const sortOrder = qp.get('sortOrder') || 'ASCENDING';
  if (sortOrder !== 'ASCENDING' && sortOrder !== 'DESCENDING') {
    return apiError(ctx, E.validation('sortOrder'), causes('sortOrder: must be ASCENDING or DESCENDING'));
  }
  const until = parseLogDate(ctx, 'until');
  if (until === undefined) return;
  const sinceParam = parseLogDate(ctx, 'since');
  if (sinceParam === undefined) return;
  const now = nowMs();
  const since = sinceParam ?? (until ?? now) - LOG_DEFAULT_SPAN;
  if (since < now - LOG_MAX_AGE) return apiError(ctx, E.LOG_SINCE_TOO_OLD);
  const keywords = (qp.get('q') || '').split(/\s+/).filter(Boolean);
  if (keywords.some((k) => k.length > 40)) return apiError(ctx, E.LOG_Q_TOO_LONG);
  const filterText = qp.get('filter');
  let filter = null;
  if (filterText !== null) {
    try { filter = parseFilter(filterText); } catch (e) {
      if (!(e instanceof FilterError)) throw e;
      return apiError(ctx, e.badOp ? E.logBadOperator(filterText, e.badOp, e.pos) : E.logBadFilter(filterText, e.message));
    }
  }
  const afterRaw = qp.get('after');
  let afterSeq = null;
  if (afterRaw !== null) {
    const m = /^\d+_(\d+)$/.exec(afterRaw);
    if (!m) return apiError(ctx, E.validation('after'), causes('after: not a cursor from a next link'));
    afterSeq = Number(m[1]);
  }
  const wanted = (ev) => (!filter || matchesFilter(filter, ev.event))
    && keywords.every((k) => JSON.stringify(ev.event).toLowerCase().includes(k.toLowerCase()));

  const polling = until === null && sortOrder === 'ASCENDING';
  let start; // the position the query starts from: events after seq `start`
  let candidates;
  if (polling) {
    start = afterSeq ?? logEvents.filter((ev) => ev.ms < since).length;
    candidates = logEvents.slice(start);
  } else {
    const upper = until ?? now;
    candidates = logEvents.filter((ev) => ev.ms >= since && ev.ms < upper);
    if (sortOrder === 'DESCENDING') candidates.reverse();
    if (afterSeq !== null) candidates = candidates.filter((ev) => (sortOrder === 'DESCENDING' ? ev.seq < afterSeq : ev.seq > afterSeq));
    start = afterSeq ?? (sortOrder === 'DESCENDING' ? logEvents.length + 1 : 0);
  }
  const matched = candidates.filter(wanted);
  const page = matched.slice(0, limit);
  const next = page.length ? cursorOf(page[page.length - 1].seq) : (afterRaw ?? cursorOf(start));
  const links = [`<${ctx.base}${ctx.path}${ctx.rawQuery ? '?' + ctx.rawQuery : ''}>; rel="self"`];
  if (polling || matched.length > limit) {
    const set = polling ? { limit, sortOrder, after: next } : { limit, sortOrder, since: iso(since), until: iso(until ?? now), after: next };
    links.push(`<${linkOrigin(ctx)}${ctx.path}?${linkQuery(withoutKeys(qp, ['since']), set)}>; rel="next"`);
  }
  apiSend(ctx, 200, page.map((ev) => ev.event), { Link: links });
}

// ===========================================================================
// 14. Fault injection
// ===========================================================================

const FAULT_KINDS = ['html502', 'html503', 'html504', 'truncated', 'reset', 'delay', 'rate_limit', 'redirect',
  'next_off_origin', 'not_json', 'deep_json', 'query_timeout', 'server_error', 'concurrency', 'invalid_token_json'];

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
    if (!isInt(v, 0)) throw new Error(`faults[${i}].${name} must be a non-negative integer`);
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

// Cuts the exchange short: RST_STREAM on HTTP/2 (only that request dies, as
// a proxy would do it), else the connection (RST rather than FIN on plain
// TCP, so the client sees "connection reset by peer").
function abort(ctx) {
  const { req, res } = ctx;
  if (res.stream) res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  else if (typeof req.socket.resetAndDestroy === 'function' && !ctx.tls) req.socket.resetAndDestroy();
  else req.socket.destroy();
}

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
      await sleep(f.delay_ms);
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
    case 'html504':
      send(ctx, 504, htmlPage(504, 'Gateway Timeout'), { 'Content-Type': 'text/html' });
      return true;
    case 'query_timeout':
      send(ctx, 500, QUERY_TIMEOUT_BODY);
      return true;
    case 'server_error':
      oktaErr(ctx, E.SERVER_ERROR);
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
      const limit = limitOf(bucketOf(ctx.req.method, ctx.path));
      oktaErr(ctx, E.RATE_LIMIT, [], {
        'X-Rate-Limit-Limit': String(limit ?? 0),
        'X-Rate-Limit-Remaining': '0',
        'X-Rate-Limit-Reset': String(nowSec() + f.reset_in),
      });
      return true;
    }
    case 'concurrency':
      // The concurrency 429 without filling the org: Limit and Remaining always 0, Reset an
      // estimate (DOCS rl-best-practices "Example rate limit header with concurrent rate
      // limit"); the body is undocumented, E0000047 is assumed (as in admitConcurrent).
      state.stats.concurrency_429++;
      oktaErr(ctx, E.RATE_LIMIT, [], {
        'X-Rate-Limit-Limit': '0',
        'X-Rate-Limit-Remaining': '0',
        'X-Rate-Limit-Reset': String(nowSec() + f.reset_in),
      });
      return true;
    case 'invalid_token_json':
      // 401 with Okta's JSON error body and no WWW-Authenticate challenge, as Okta answers an
      // unknown or expired token on some paths: DOCS reference/error-codes E0000011 "Invalid
      // token provided" (401), the body as captured in okta-sdk-golang's TestParseOktaErrorSuccess.
      oktaErr(ctx, E.INVALID_TOKEN);
      return true;
    case 'truncated': {
      // Promise more bytes than are sent, then drop the exchange. The bytes
      // sent are the start of a plausible answer for the endpoint.
      const body = ctx.kind === 'token'
        ? '{"token_type":"DPoP","expires_in":3600,"access_token":"eyJraWQiOiJ0cnVuY2F0ZWQi'
        : JSON.stringify([{ id: userId(1), status: 'ACTIVE', profile: { login: 'user1@example.com' } }]).slice(0, -2);
      entry.status = 200;
      res.writeHead(200, {
        'X-Okta-Request-Id': randomToken(18),
        Date: currentDate().toUTCString(),
        'Content-Type': 'application/json',
        'Content-Length': String(Buffer.byteLength(body) + 1000),
      });
      res.write(body, () => setTimeout(() => abort(ctx), 20));
      return true;
    }
    case 'reset':
      entry.status = 0;
      abort(ctx);
      return true;
    default:
      return false;
  }
}

function consumePresentedJtis(ctx) {
  const proof = peekProof(ctx.req);
  if (proof && typeof proof.jti === 'string' && !state.proofJtis.has(proof.jti)) {
    state.proofJtis.add(proof.jti, nowSec() + PROOF_MAX_AGE + PROOF_MAX_AHEAD + 60);
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
// 15. Test control API: /__emulator/*  (no auth; loopback test use only)
// ===========================================================================

const USER_STATUSES = ['STAGED', 'PROVISIONED', 'ACTIVE', 'RECOVERY', 'LOCKED_OUT', 'PASSWORD_EXPIRED', 'SUSPENDED', 'DEPROVISIONED'];

function settingsSnapshot() {
  return {
    rs_nonce: state.rsNonceMode,
    token_lifetime: state.tokenLifetime,
    faults: state.faults,
    as_nonce: state.asNonce.current,
    rs_nonce_value: state.rsNonce.current,
    users: users.size,
    log_entries: state.log.length,
    log_events: logEvents.length,
    rate_limits: effectiveLimits(),
    app_share: state.appShare,
    app_shares: effectiveAppShares(),
    rate_window_seconds: state.windowSeconds,
    other_apps_use: state.otherUse,
    rate_limit_headers: state.rateLimitHeaders,
    apps_subpath_bucket: state.appsSubpathBucket,
    concurrency_limit: state.concurrencyLimit,
    latency_ms: state.latencyMs,
    clock_skew: state.clockSkew,
  };
}

// Per-app shares in force: each configured client's own app_share, then control app_shares.
function effectiveAppShares() {
  const out = {};
  for (const c of config.clients.values()) if (c.app_share !== null) out[c.client_id] = c.app_share;
  return { ...out, ...state.appShares };
}

// control app_shares: {"<client_id>": share}, shares in (0, 1]. Throws.
function parseAppShares(v) {
  if (!isObject(v)) throw new Error('app_shares must be an object');
  for (const [cid, share] of Object.entries(v)) {
    if (!isShare(share)) throw new Error(`app_shares.${cid} must be a number in (0, 1]`);
  }
  return { ...v };
}

function applyControl(body) {
  const known = ['rs_nonce', 'rotate_nonce', 'expire_tokens', 'token_lifetime', 'faults', 'rate_limits', 'app_share',
    'concurrency_limit', 'latency_ms', 'clock_skew', 'log_events', 'user_status', 'app_shares', 'rate_window_seconds',
    'other_apps_use', 'rate_limit_headers', 'apps_subpath_bucket'];
  if (!isObject(body)) throw new Error('body must be a JSON object');
  for (const k of Object.keys(body)) if (!known.includes(k)) throw new Error(`unknown control key ${k}`);
  // Validate everything before changing anything.
  const check = (name, ok, what) => {
    if (body[name] !== undefined && !ok(body[name])) throw new Error(`${name} must be ${what}`);
  };
  check('token_lifetime', (v) => isInt(v, 1), 'a positive integer');
  check('app_share', isShare, 'a number in (0, 1]');
  check('concurrency_limit', (v) => isInt(v, 1), 'a positive integer');
  check('latency_ms', (v) => isInt(v, 0), 'a non-negative integer');
  check('clock_skew', Number.isInteger, 'an integer (seconds)');
  check('log_events', (v) => isInt(v, 0), 'a non-negative integer');
  check('rate_window_seconds', isWindow, 'null or an integer >= 1');
  check('rate_limit_headers', (v) => typeof v === 'boolean', 'true or false');
  check('apps_subpath_bucket', (v) => APPS_SUBPATH_BUCKETS.includes(v), `one of ${APPS_SUBPATH_BUCKETS.join(', ')}`);
  const rateLimits = body.rate_limits === undefined ? null : parseRateLimits(body.rate_limits, 'rate_limits');
  const otherUse = body.other_apps_use === undefined ? null : parseOtherUse(body.other_apps_use, 'other_apps_use');
  const appShares = body.app_shares === undefined ? null : parseAppShares(body.app_shares);
  const statuses = body.user_status === undefined ? {} : body.user_status;
  if (!isObject(statuses) && !asArray(statuses)) throw new Error('user_status must be an object');
  for (const [id, s] of Object.entries(statuses)) {
    if (!users.has(id)) throw new Error(`user_status: no user ${id}`);
    if (!USER_STATUSES.includes(s)) throw new Error(`user_status.${id} must be one of ${USER_STATUSES.join(', ')}`);
  }
  const faultList = body.faults === undefined ? [] : asArray(body.faults);
  if (!faultList) throw new Error('faults must be an array');
  const faults = faultList.map(validateFault);

  if (body.rs_nonce !== undefined) state.rsNonceMode = !!body.rs_nonce;
  if (body.rotate_nonce) { state.asNonce.rotate(); state.rsNonce.rotate(); }
  if (body.expire_tokens) for (const jti of state.issuedTokens.keys()) state.revokedTokens.add(jti);
  if (body.token_lifetime !== undefined) state.tokenLifetime = body.token_lifetime;
  // rate_limits replaces the overrides of the config's limits ({} restores them).
  if (rateLimits) state.rateOverrides = rateLimits;
  if (body.app_share !== undefined) state.appShare = body.app_share;
  // app_shares replaces the runtime per-app shares ({} leaves the configured ones).
  if (appShares) state.appShares = appShares;
  // other_apps_use replaces the setting and counts from now on, in the current window too.
  if (otherUse !== null) state.otherUse = otherUse;
  if (body.rate_limit_headers !== undefined) state.rateLimitHeaders = body.rate_limit_headers;
  // A new window length, or a bucket moved, starts every bucket's window afresh.
  if (body.rate_window_seconds !== undefined && body.rate_window_seconds !== state.windowSeconds) {
    state.windowSeconds = body.rate_window_seconds;
    state.windows.clear();
  }
  if (body.apps_subpath_bucket !== undefined && body.apps_subpath_bucket !== state.appsSubpathBucket) {
    state.appsSubpathBucket = body.apps_subpath_bucket;
    state.windows.clear();
  }
  if (body.concurrency_limit !== undefined) state.concurrencyLimit = body.concurrency_limit;
  if (body.latency_ms !== undefined) state.latencyMs = body.latency_ms;
  if (body.clock_skew !== undefined) state.clockSkew = body.clock_skew;
  for (let k = 0; k < (body.log_events || 0); k++) appendEvent(nowMs());
  for (const [id, s] of Object.entries(statuses)) setStatus(users.get(id), s);
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
      resetStats();
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
    case 'GET /__emulator/stats':
      return send(ctx, 200, statsSnapshot());
    case 'GET /__emulator/users/count':
      return send(ctx, 200, { count: users.size });
    default:
      return send(ctx, 404, { error: `no control endpoint ${route}` });
  }
}

// ===========================================================================
// 16. Dispatch and request log
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

// Order for token and API requests: concurrency admission, latency_ms (in
// flight), faults (like a gateway in front of the org), the per-minute rate
// limits, then the endpoint.

// latency_ms as a client sees Okta's: the answer leaves that long after the request came,
// the emulator's own work included (done at once, the answer held back until then), so its
// CPU time does not add up behind many requests in flight.
function holdAnswer(res, at) {
  const end = res.end.bind(res);
  res.end = (...args) => {
    const wait = at - Date.now();
    if (wait <= 0) return end(...args);
    setTimeout(() => end(...args), wait);
    return res;
  };
}
async function handle(req, res, tls, base) {
  const rawUrl = req.url || '/';
  const qi = rawUrl.indexOf('?');
  const p = qi < 0 ? rawUrl : rawUrl.slice(0, qi);
  const rawQuery = qi < 0 ? '' : rawUrl.slice(qi + 1);
  const ctx = {
    req, res, tls, base, path: p, rawQuery, query: new URLSearchParams(rawQuery), entry: null, body: Buffer.alloc(0),
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
    t: Date.now(), // real time, not the emulator's (skewed) clock
    method: req.method,
    path: p,
    query: rawQuery,
    kind: ctx.kind,
    http_version: req.httpVersion,
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

  try {
    ctx.body = await readBody(req);
  } catch (e) {
    if (e.tooLarge) return oktaErr(ctx, E.validation('request body too large'));
    throw e;
  }

  const limited = ctx.kind === 'token' || ctx.kind === 'api';
  if (limited) {
    ctx.clientHint = peekClientId(ctx);
    if (!admitConcurrent(ctx)) return;
    if (state.latencyMs > 0) holdAnswer(res, Date.now() + state.latencyMs);
  }
  const fault = takeFault(req.method, p);
  if (fault && await applyFault(ctx, fault)) return;
  if (limited && !admitRate(ctx)) return;

  switch (ctx.kind) {
    case 'token': return handleToken(ctx);
    case 'keys': return handleKeys(ctx);
    case 'meta': return handleMetadata(ctx);
    case 'api': return handleApi(ctx);
    default: return oktaErr(ctx, E.NO_PATH);
  }
}

function logLine(entry) {
  if (!verbose) return;
  // Path, status and error code only: never headers, bodies or tokens.
  process.stderr.write(`[okta-emulator] ${entry.method} ${entry.path}${entry.query ? '?' + entry.query : ''} -> ` +
    `${entry.status}${entry.error ? ' ' + entry.error : ''}${entry.fault ? ' fault=' + entry.fault : ''}\n`);
}

// ===========================================================================
// 17. Startup and shutdown
// ===========================================================================

// With TLS: HTTP/2 for clients that offer h2 in ALPN (libcurl does), HTTP/1.1
// for the others (nginx cosockets) through the same compat request API.
const tls = !!opts.tlsCert;
let server;
try {
  server = tls
    ? http2.createSecureServer({ cert: fs.readFileSync(opts.tlsCert), key: fs.readFileSync(opts.tlsKey), allowHTTP1: true })
    : http.createServer();
} catch (e) {
  die(`cannot start server: ${e.message}`);
}

// Each HTTP/2 connection ends gracefully after 1000 requests (GOAWAY NO_ERROR, like nginx's
// default keepalive_requests; Okta's own cap is undocumented). libcurl 7.88 resets every
// finished stream, and Node 20's nghttp2 takes more than 1000 resets (plus 33/s) for a rapid
// reset attack, ending the connection with GOAWAY INTERNAL_ERROR, which no org sends.
server.on('session', (sess) => {
  let streams = 0;
  sess.on('stream', () => { if (++streams === 1000) sess.close(); });
});
let baseUrl = null; // known once listening (the port may be chosen by the OS)

server.on('request', (req, res) => {
  handle(req, res, tls, baseUrl)
    .catch((e) => {
      process.stderr.write(`[okta-emulator] internal error on ${req.method} ${req.url.split('?')[0]}: ${e && e.message}\n`);
      if (!res.headersSent && !res.writableEnded) {
        res.writeHead(500, { 'Content-Type': 'application/json', Date: currentDate().toUTCString() });
        res.end(JSON.stringify({ errorCode: E.SERVER_ERROR.code, errorSummary: E.SERVER_ERROR.summary, errorLink: E.SERVER_ERROR.code,
          errorId: newErrorId(), errorCauses: [] }));
      }
    });
});
server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  else socket.destroy();
});
server.on('error', (e) => die(`server error: ${e.message}`));

// Every TCP connection, so shutdown can close them (the HTTP/2 server has no
// closeAllConnections).
const sockets = new Set();
server.on('connection', (s) => {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
});

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
  for (const s of sockets) s.destroy();
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
