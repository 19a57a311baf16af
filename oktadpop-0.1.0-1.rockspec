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
  HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
}
build = {
  type = "builtin",
  modules = {
    ["oktadpop.admin"] = "lua/oktadpop/admin.lua",
    ["oktadpop.client"] = "lua/oktadpop/client.lua",
    ["oktadpop.curl"] = "lua/oktadpop/curl.lua",
    ["oktadpop.output"] = "lua/oktadpop/output.lua",
    ["oktadpop.pretty"] = "lua/oktadpop/pretty.lua",
    ["oktadpop.progress"] = "lua/oktadpop/progress.lua",
    ["oktadpop.repl"] = "lua/oktadpop/repl.lua",
    ["oktadpop.resty"] = "lua/oktadpop/resty.lua",
    ["oktadpop.resty.guard"] = "lua/oktadpop/resty/guard.lua",
    ["oktadpop.resty.http"] = "lua/oktadpop/resty/http.lua",
    ["oktadpop.resty.redis"] = "lua/oktadpop/resty/redis.lua",
    oktadpop = {
      sources = {
        "src/binding/core_lua.c", "src/binding/module.c", "src/binding/setup.c",
        "src/binding/store.c", "src/core/admission.c", "src/core/answer.c", "src/core/config.c",
        "src/core/operation.c", "src/core/oplife.c", "src/core/opstate.c", "src/core/pages.c",
        "src/core/request.c", "src/core/result.c", "src/core/retry.c", "src/core/session.c",
        "src/jose/algs.c", "src/jose/dpop.c", "src/jose/jws.c", "src/jose/keycache.c",
        "src/jose/keyimport.c", "src/jose/keys.c", "src/lua/b64url_push.c", "src/lua/class.c",
        "src/lua/compat.c", "src/lua/errors.c", "src/lua/files.c", "src/lua/headers.c",
        "src/lua/json.c", "src/lua/options.c", "src/lua/outfile.c", "src/lua/stack.c",
        "src/pure/b64url.c", "src/pure/dotenv.c", "src/pure/httpfields.c", "src/pure/ratelimit.c",
        "src/pure/redisurl.c", "src/pure/url.c", "src/transport/curl.c", "src/transport/redis.c"
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "crypto", "curl", "hiredis", "m" },
      incdirs = { "src", "$(OPENSSL_INCDIR)", "$(CURL_INCDIR)", "$(HIREDIS_INCDIR)" },
      libdirs = { "$(OPENSSL_LIBDIR)", "$(CURL_LIBDIR)", "$(HIREDIS_LIBDIR)" },
    },
  },
  install = { bin = { oktadpop = "bin/oktadpop" } },
}
