#!/usr/bin/env lua5.4
-- Makes a key pair in memory: writes the private PEM (mode 0600) and prints the public JWK
-- to paste into the Okta admin console (app > General > Public keys > Add key > Paste JWK).
--   lua5.4 examples/keygen.lua [--alg ES256|RS256|...] [--kid ID] [--out private.pem]
local oktadpop = require "oktadpop"
local cjson = require "cjson"

local opts = {alg = "RS256", out = "private_key.pem"}
local i = 1
while arg[i] do
  local flag, value = arg[i], arg[i + 1]
  if flag == "--alg" then opts.alg = value
  elseif flag == "--kid" then opts.kid = value
  elseif flag == "--out" then opts.out = value
  else
    io.stderr:write("usage: keygen.lua [--alg RS256] [--kid ID] [--out private.pem]\n")
    os.exit(2)
  end
  i = i + 2
end

local key = assert(oktadpop.generate_key(opts.alg, {kid = opts.kid}))
assert(key:save_pem(opts.out, true))
io.stderr:write(("wrote %s (mode 0600): %s\n"):format(opts.out, tostring(key)))
io.stderr:write("public JWK for the Okta admin console:\n")
print(cjson.encode(key:public_jwk()))
