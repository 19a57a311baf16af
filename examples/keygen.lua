#!/usr/bin/env lua5.4
-- Makes a key pair in memory: writes the private PEM (mode 0600) to --out and prints the public
-- JWK to paste into the Okta admin console (app > General > Public keys > Add key > Paste JWK).
-- An existing file is never replaced (it may be the key registered in Okta) unless --force.
--   lua5.4 examples/keygen.lua --out private.pem [--alg RS256|RS384|RS512|ES256|ES384|ES512] [--kid ID] [--force]
local argparse = require "argparse"
local oktadpop = require "oktadpop"
local output = require "oktadpop.output"
local cjson = require "cjson"

local p = argparse("keygen.lua", "Make a key pair: the private PEM to a file, the public JWK on stdout.")
p:option("--out", "Where to write the private key (mode 0600)."):count(1)
p:option("--alg", "The signing algorithm."):choices({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
  :default("RS256")
p:option("--kid", "The key id to put in the JWK.")
p:flag("--force", "Replace --out if it exists.")
local ok, args = p:pparse(arg)
if not ok then io.stderr:write(p:get_usage(), "\n", args, "\n") os.exit(2) end

local key, err = oktadpop.generate_key(args.alg, {kid = args.kid})
if not key then io.stderr:write(tostring(err), "\n") os.exit(1) end
local saved, serr = output.save_key(key, args.out, args.force)
if not saved then io.stderr:write(serr, "\n") os.exit(1) end
io.stderr:write(("wrote %s (mode 0600): %s\npublic JWK for the Okta admin console:\n"):format(args.out, tostring(key)))
print(cjson.encode(key:public_jwk()))
