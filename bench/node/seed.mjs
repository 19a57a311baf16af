// bench/node/seed.mjs: the seed's oktaHelper/oktaService (okta-node-dpop-blog.md) with its DPoP
// additions, unchanged but for two things: the algorithm is a parameter (the seed hard-codes
// RS256) and nothing is printed (the seed logs tokens and proofs to the console).
import fs from 'node:fs';
import crypto from 'node:crypto';
import jwt from 'jsonwebtoken';

export function makeSeed(cfg) {
  const oktaHelper = {
    oktaDomain: cfg.orgUrl,
    oktaClientId: cfg.clientId,
    oktaScopes: cfg.scopes,
    ccPrivateKeyFile: cfg.ccPrivateKeyFile,
    ccPrivateKey: null,
    dpopPrivateKeyFile: cfg.dpopPrivateKeyFile,
    dpopPublicKeyFile: cfg.dpopPublicKeyFile,
    dpopPrivateKey: null,
    dpopPublicKey: null,
    dpopAlg: cfg.dpopAlg || 'RS256',
    accessToken: '',
    getTokenEndpoint: function() { return `${this.oktaDomain}/oauth2/v1/token`; },
    getNewJti: function() { return crypto.randomBytes(32).toString('hex'); },
    generateCcToken: function() {
      let privateKey = this.ccPrivateKey || fs.readFileSync(this.ccPrivateKeyFile);
      let signingOptions = {
        algorithm: 'RS256',
        expiresIn: '5m',
        audience: this.getTokenEndpoint(),
        issuer: this.oktaClientId,
        subject: this.oktaClientId
      };
      return jwt.sign({jti: this.getNewJti()}, privateKey, signingOptions);
    },
    tokenRequest: function(ccToken, dpopToken) {
      return fetch(this.getTokenEndpoint(), {
        method: 'POST',
        headers: {
          Accept: 'application/json',
          'Content-Type': 'application/x-www-form-urlencoded',
          DPoP: dpopToken
        },
        body: new URLSearchParams({
          'grant_type': 'client_credentials',
          scope: this.oktaScopes,
          'client_assertion_type': 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          'client_assertion': ccToken
        })
      });
    },
    generateDpopToken: function(htm, htu, additionalClaims) {
      let privateKey = this.dpopPrivateKey || fs.readFileSync(this.dpopPrivateKeyFile);
      let publicKey = this.dpopPublicKey || fs.readFileSync(this.dpopPublicKeyFile);
      let signingOptions = {
        algorithm: this.dpopAlg,
        expiresIn: '5m',
        header: {
          typ: 'dpop+jwt',
          alg: this.dpopAlg,
          jwk: JSON.parse(publicKey)
        }
      };
      let payload = {
        ...additionalClaims,
        htu,
        htm,
        jti: this.getNewJti()
      };
      return jwt.sign(payload, privateKey, signingOptions);
    },
    generateAth: function(token) {
      return crypto.createHash('sha256').update(token).digest('base64').replace(/\//g, '_').replace(/\+/g, '-').replace(/\=/g, '');
    }
  };

  const oktaService = {
    authenticate: async function() {
      if (!oktaHelper.accessToken) {
        let ccToken = oktaHelper.generateCcToken();
        let dpopToken = oktaHelper.generateDpopToken('POST', oktaHelper.getTokenEndpoint());
        let tokenResp = await oktaHelper.tokenRequest(ccToken, dpopToken);
        let respBody = await tokenResp.json();
        if (tokenResp.status != 400 || (respBody && respBody.error != 'use_dpop_nonce')) {
          return null; // the seed: 'Authentication Failed' (also on a first-try success)
        }
        let dpopNonce = tokenResp.headers.get('dpop-nonce');
        dpopToken = oktaHelper.generateDpopToken('POST', oktaHelper.getTokenEndpoint(), {nonce: dpopNonce});
        ccToken = oktaHelper.generateCcToken();
        tokenResp = await oktaHelper.tokenRequest(ccToken, dpopToken);
        respBody = await tokenResp.json();
        oktaHelper.accessToken = respBody['access_token'];
      }
      return oktaHelper.accessToken;
    },
    managementApiCall: function (relativeUri, httpMethod, headers, body) {
      let uri = `${oktaHelper.oktaDomain}${relativeUri}`;
      let ath = oktaHelper.generateAth(oktaHelper.accessToken);
      let dpopToken = oktaHelper.generateDpopToken(httpMethod, uri, {ath});
      let reqHeaders = {
        'Accept': 'application/json',
        'Authorization': `DPoP ${oktaHelper.accessToken}`,
        'DPoP': dpopToken,
        ...headers
      };
      return fetch(uri, {
        method: httpMethod,
        headers: reqHeaders,
        body
      });
    }
  };
  return { oktaHelper, oktaService };
}
