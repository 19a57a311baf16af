// spec/support/responder.mjs -- a raw TCP (or TLS) HTTP/1.1 responder for spec/hostile_spec.lua:
// a hostile server whose every byte the test controls, that records every byte it receives.
//
//   node responder.mjs --dir DIR [--tls-cert cert.pem --tls-key key.pem] [--watch-pid PID]
//
// Listens on 127.0.0.1, port 0; writes {"port":N,"url":...} to DIR/ready.json (by rename) when
// ready. Each request is saved raw (head and body, as received) to DIR/req-<n>.raw and noted
// in DIR/log.jsonl ({n, method, target}); with TLS, each TCP connection is noted ({"tcp":true}),
// as is each finished handshake ({"tls_ok":true}) and each one that failed ({"tls_error":...}).
// Every answer closes the connection. The route is the request path:
//
//   POST .../oauth2/v1/token  200, a DPoP token (no checks: this server is not the point)
//   /echo                     200 {"ok":true}
//   /big-headers              200 with ~200 KiB of response headers
//   /big-body                 200, Content-Length 4 MiB, sent in full
//   /big-body-chunked         200, chunked, 4 MiB, no length announced
//   /gzip-bomb                200, Content-Encoding: gzip: 16 KiB that inflate to 16 MiB of JSON
//   /trickle                  200, then one body byte every 200 ms, forever
//   /trickle-head             the status line, then one header byte every 200 ms, forever
//   /next-off-host?other=P    200 [{"id":1},{"id":2}] with Link rel="next" to 127.0.0.1:P
//   /deep-object              200, {"a":{"a":... 100000 levels deep
//   /bad-utf8                 200, JSON whose strings hold invalid UTF-8
//   /lone-surrogate           200, JSON with a "\ud800" escape
//   /not-json                 200, Content-Type application/json, body <html>
//   /endless-chunk-size       200 chunked, then a chunk-size line that never ends (1 KiB/10 ms)
//   /endless-trailers         200 chunked, a last chunk, then trailer lines that never end
//   /negative-length          200 with Content-Length: -1
//   /hex-length               200 with Content-Length: 0x2
//   /continue-100             100 Continue, then 200 {"ok":true}
//   /many-continue            100 Continue, forever (every 10 ms)
//   anything else             404 JSON
// With --script FILE (a JSON list of {status, headers, body, reset_in}), every request gets the
// next answer of the list instead, whatever its path, with a Date header; reset_in N sets
// X-Rate-Limit-Reset to now + N seconds; $BASE in a header value is this server's URL. Past
// the end of the list: 500. That plays one scripted
// conversation to any client (spec/onecore_spec.lua plays the same one to both drivers).
// SIGTERM stops it; --watch-pid stops it once that process is gone.
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import zlib from 'node:zlib';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
if (!args.dir) { console.error('responder: --dir is required'); process.exit(2); }
const dir = args.dir;
let seq = 0;

const note = (obj) => fs.appendFileSync(path.join(dir, 'log.jsonl'), JSON.stringify(obj) + '\n');

function head(status, headers) {
  let s = `HTTP/1.1 ${status}\r\n`;
  for (const [k, v] of headers) s += `${k}: ${v}\r\n`;
  return s + 'Connection: close\r\n\r\n';
}

function sendFull(sock, status, body, type = 'application/json', extra = []) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
  sock.end(Buffer.concat([
    Buffer.from(head(status, [['Content-Type', type], ['Content-Length', String(buf.length)], ...extra])), buf]));
}

const BOMB = zlib.gzipSync(Buffer.concat([Buffer.from('{"pad":"'), Buffer.alloc(16 << 20, 0x30), Buffer.from('"}')]),
  { level: 9 });

const script = args.script ? JSON.parse(fs.readFileSync(args.script, 'utf8')) : null;
let played = 0;
let base = '';

function playScript(sock) {
  const a = script[played++];
  if (!a) return sendFull(sock, '500 Internal Server Error', '{"errorSummary":"the script is over"}');
  const extra = [['Date', new Date().toUTCString()]];
  for (const [k, v] of Object.entries(a.headers || {})) extra.push([k, String(v).replaceAll('$BASE', base)]);
  if (a.reset_in !== undefined) extra.push(['X-Rate-Limit-Reset', String(Math.floor(Date.now() / 1000) + a.reset_in)]);
  const body = a.body === undefined ? '' : typeof a.body === 'string' ? a.body : JSON.stringify(a.body);
  return sendFull(sock, `${a.status} Scripted`, body, typeof a.body === 'string' ? 'text/html' : 'application/json', extra);
}

function respond(sock, method, target) {
  if (script) return playScript(sock);
  const url = new URL(target, 'http://x');
  const p = url.pathname;
  const timers = [];
  sock.on('close', () => timers.forEach(clearInterval));
  sock.on('error', () => {});
  if (method === 'POST' && p.endsWith('/oauth2/v1/token')) {
    return sendFull(sock, '200 OK', JSON.stringify({
      access_token: 'hostile-access-token-0123456789', token_type: 'DPoP', expires_in: 3600, scope: 'okta.users.read',
    }));
  }
  switch (p) {
    case '/echo': return sendFull(sock, '200 OK', '{"ok":true}');
    case '/big-headers': {
      const hs = [];
      for (let i = 0; i < 3000; i++) hs.push([`X-Pad-${i}`, 'p'.repeat(60)]);
      return sendFull(sock, '200 OK', '{}', 'application/json', hs);
    }
    case '/big-body': {
      sock.write(head('200 OK', [['Content-Type', 'application/octet-stream'], ['Content-Length', String(4 << 20)]]));
      const chunk = Buffer.alloc(64 << 10, 0x61);
      let left = 64;
      const more = () => { while (left > 0) { left--; if (!sock.write(chunk)) return sock.once('drain', more); } sock.end(); };
      return more();
    }
    case '/big-body-chunked': {
      sock.write(head('200 OK', [['Content-Type', 'application/octet-stream'], ['Transfer-Encoding', 'chunked']]));
      const chunk = Buffer.concat([Buffer.from((64 << 10).toString(16) + '\r\n'), Buffer.alloc(64 << 10, 0x61), Buffer.from('\r\n')]);
      let left = 64;
      const more = () => {
        while (left > 0) { left--; if (!sock.write(chunk)) return sock.once('drain', more); }
        sock.end('0\r\n\r\n');
      };
      return more();
    }
    case '/gzip-bomb':
      return sendFull(sock, '200 OK', BOMB, 'application/json', [['Content-Encoding', 'gzip']]);
    case '/trickle':
      sock.write(head('200 OK', [['Content-Type', 'application/json'], ['Content-Length', '1000']]));
      timers.push(setInterval(() => sock.write(' '), 200));
      return;
    case '/trickle-head': {
      sock.write('HTTP/1.1 200 OK\r\n');
      const text = 'X-Slow: ' + 'x'.repeat(10000);
      let i = 0;
      timers.push(setInterval(() => sock.write(text[i++ % text.length]), 200));
      return;
    }
    case '/next-off-host': {
      const other = url.searchParams.get('other');
      return sendFull(sock, '200 OK', '[{"id":1},{"id":2}]', 'application/json',
        [['Link', `<http://127.0.0.1:${other}/api/v1/users?after=2>; rel="next"`]]);
    }
    case '/deep-object':
      return sendFull(sock, '200 OK', '{"a":'.repeat(100000) + '1' + '}'.repeat(100000));
    case '/bad-utf8':
      return sendFull(sock, '200 OK', Buffer.concat([Buffer.from('{"s":"'), Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]),
        Buffer.from('","ok":true}')]));
    case '/lone-surrogate': return sendFull(sock, '200 OK', '{"s":"\\ud800"}');
    case '/not-json': return sendFull(sock, '200 OK', '<html>oops</html>');
    case '/endless-chunk-size':
      sock.write(head('200 OK', [['Content-Type', 'application/json'], ['Transfer-Encoding', 'chunked']]));
      timers.push(setInterval(() => sock.write('f'.repeat(1024)), 10));
      return;
    case '/endless-trailers':
      sock.write(head('200 OK', [['Content-Type', 'application/json'], ['Transfer-Encoding', 'chunked']]) + '2\r\n{}\r\n0\r\n');
      timers.push(setInterval(() => sock.write('X-Trailer: ' + 't'.repeat(1000) + '\r\n'), 10));
      return;
    case '/negative-length':
      return sock.end(head('200 OK', [['Content-Type', 'application/json'], ['Content-Length', '-1']]) + '{}');
    case '/hex-length':
      return sock.end(head('200 OK', [['Content-Type', 'application/json'], ['Content-Length', '0x2']]) + '{}');
    case '/continue-100':
      sock.write('HTTP/1.1 100 Continue\r\n\r\n');
      return sendFull(sock, '200 OK', '{"ok":true}');
    case '/many-continue':
      timers.push(setInterval(() => sock.write('HTTP/1.1 100 Continue\r\n\r\n'), 10));
      return;
    default: return sendFull(sock, '404 Not Found', '{"errorCode":"E0000007","errorSummary":"Not found"}');
  }
}

function onConnection(sock) {
  let buf = Buffer.alloc(0);
  let done = false;
  sock.on('error', () => {});
  sock.on('data', (d) => {
    if (done) return;
    buf = Buffer.concat([buf, d]);
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const headText = buf.subarray(0, end).toString('latin1');
    const m = /content-length:\s*(\d+)/i.exec(headText);
    const need = end + 4 + (m ? Number(m[1]) : 0);
    if (buf.length < need) return;
    done = true;
    const n = ++seq;
    fs.writeFileSync(path.join(dir, `req-${n}.raw`), buf.subarray(0, need));
    const [method, target] = headText.split('\r\n')[0].split(' ');
    note({ n, method, target });
    respond(sock, method, target);
  });
}

let server;
if (args['tls-cert']) {
  server = tls.createServer({ cert: fs.readFileSync(args['tls-cert']), key: fs.readFileSync(args['tls-key']) }, onConnection);
  server.on('connection', () => note({ tcp: true }));
  server.on('secureConnection', () => note({ tls_ok: true }));
  server.on('tlsClientError', (err) => note({ tls_error: String(err && (err.code || err.message)) }));
} else {
  server = net.createServer(onConnection);
}
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const scheme = args['tls-cert'] ? 'https' : 'http';
  base = `${scheme}://127.0.0.1:${port}`;
  const ready = path.join(dir, 'ready.json');
  fs.writeFileSync(ready + '.tmp', JSON.stringify({ port, url: `${scheme}://127.0.0.1:${port}` }));
  fs.renameSync(ready + '.tmp', ready);
});
process.on('SIGTERM', () => process.exit(0));
if (args['watch-pid']) {
  setInterval(() => { try { process.kill(Number(args['watch-pid']), 0); } catch { process.exit(0); } }, 500).unref();
}
