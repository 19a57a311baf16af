rockspec_format = "3.0"
package = "oktadpop"
version = "0.1.0-1"
source = {
  -- the tarball `make dist` makes (dist/oktadpop-0.1.0.tar.gz); a published release puts its
  -- download URL here
  url = "oktadpop-0.1.0.tar.gz",
  dir = "oktadpop-0.1.0",
}
description = {
  summary = "Okta management API from Lua with OAuth 2.0 client credentials and DPoP (RFC 9449)",
  detailed = [[
A Lua C module: key loading, JWS and DPoP signing (OpenSSL 3), the private_key_jwt token
exchange with the DPoP nonce retry, and management API calls over libcurl, answered as tables.
]],
  license = "MIT",
}
dependencies = { "lua >= 5.1", "lua-cjson", "argparse" }
external_dependencies = {
  OPENSSL = { header = "openssl/evp.h", library = "crypto" },
  -- header not named: Debian keeps curl.h under the multiarch include folder, which the
  -- compiler searches but luarocks does not.
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    ["oktadpop.admin"] = "lua/oktadpop/admin.lua",
    ["oktadpop.output"] = "lua/oktadpop/output.lua",
    ["oktadpop.repl"] = "lua/oktadpop/repl.lua",
    ["oktadpop.resty"] = "lua/oktadpop/resty.lua",
    ["oktadpop.resty.guard"] = "lua/oktadpop/resty/guard.lua",
    ["oktadpop.resty.http"] = "lua/oktadpop/resty/http.lua",
    oktadpop = {
      sources = {
        "src/admission.c", "src/b64url.c", "src/client.c", "src/compat.c", "src/config.c",
        "src/core.c", "src/dotenv.c", "src/dpop.c", "src/errors.c", "src/files.c", "src/http.c",
        "src/json.c", "src/jws.c", "src/keycache.c", "src/keys.c", "src/oktadpop.c", "src/operation.c",
        "src/options.c", "src/pages.c", "src/pretty.c", "src/ratelimit.c", "src/request.c",
        "src/result.c", "src/retry.c", "src/session.c", "src/setup.c", "src/store.c",
        "src/transfer.c", "src/url.c"
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "crypto", "curl", "m" },
      incdirs = { "$(OPENSSL_INCDIR)", "$(CURL_INCDIR)" },
      libdirs = { "$(OPENSSL_LIBDIR)", "$(CURL_LIBDIR)" },
    },
  },
  install = { bin = { oktadpop = "bin/oktadpop" } },
}
