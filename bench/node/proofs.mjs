// bench/node/proofs.mjs VARIANT ALG [SECONDS]: DPoP proofs per CPU-second in Node.
//   seed-file  the seed's generateDpopToken as written: both key files read on every proof
//   seed-mem   the same with the seed's cache fields filled (key bytes in memory; jsonwebtoken
//              still parses the PEM and the seed JSON.parses the JWK on every proof)
//   jwt-key    jsonwebtoken with a parsed KeyObject and the header JWK as an object (its best case)
//   jose       npm jose: SignJWT with the dpop+jwt header and a CryptoKey
import crypto from 'node:crypto';
import jwt from 'jsonwebtoken';
import * as jose from 'jose';
import { makeSeed } from './seed.mjs';
import { HTU, ACCESS_TOKEN, loadKey, cpu, wall, timed, out } from './common.mjs';

const [variant, alg = 'ES256', secs = '2.5'] = process.argv.slice(2);
const seconds = Number(secs);
const key = loadKey(alg);
let one;

if (variant === 'seed-file' || variant === 'seed-mem') {
  const { oktaHelper } = makeSeed({ dpopPrivateKeyFile: key.pemPath, dpopPublicKeyFile: key.jwkPath, dpopAlg: alg });
  oktaHelper.accessToken = ACCESS_TOKEN;
  if (variant === 'seed-mem') {
    oktaHelper.dpopPrivateKey = key.pem;
    oktaHelper.dpopPublicKey = Buffer.from(JSON.stringify(key.publicJwk));
  }
  // exactly what managementApiCall does before fetch
  one = () => oktaHelper.generateDpopToken('GET', HTU, { ath: oktaHelper.generateAth(oktaHelper.accessToken) });
} else if (variant === 'jwt-key') {
  const header = { typ: 'dpop+jwt', alg, jwk: key.publicJwk };
  one = () => jwt.sign({
    ath: crypto.createHash('sha256').update(ACCESS_TOKEN).digest('base64url'),
    htu: HTU, htm: 'GET', jti: crypto.randomBytes(16).toString('base64url'),
  }, key.keyObject, { algorithm: alg, header });
} else if (variant === 'jose') {
  const cryptoKey = await jose.importPKCS8(key.pem.toString(), alg);
  const jwk = key.publicJwk;
  one = () => new jose.SignJWT({
    htm: 'GET', htu: HTU,
    ath: crypto.createHash('sha256').update(ACCESS_TOKEN).digest('base64url'),
  }).setProtectedHeader({ alg, typ: 'dpop+jwt', jwk })
    .setIssuedAt().setJti(crypto.randomBytes(16).toString('base64url')).sign(cryptoKey);
} else {
  throw new Error(`unknown variant ${variant}`);
}

// Check one proof: a valid DPoP JWT for this key.
const proof = await one();
const { protectedHeader } = await jose.jwtVerify(proof, await jose.importJWK(key.publicJwk, alg), { typ: 'dpop+jwt' });
if (protectedHeader.alg !== alg) throw new Error('wrong alg');

await timed(0.3, cpu, 16, one); // warm-up (JIT)
const w0 = wall();
const { n, t } = await timed(seconds, cpu, 16, one);
out('n', n);
out('cpu_s', t.toFixed(3));
out('wall_s', (wall() - w0).toFixed(3));
out('rate', (n / t).toFixed(1));
out('proof_bytes', proof.length);
