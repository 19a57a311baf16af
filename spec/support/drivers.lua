-- spec/support/drivers.lua: one scenario module run in both drivers, so a spec states a behaviour
-- once. A scenario is scenarios[name](client, clock, args...) -> a JSON-able table; it runs in
-- this process over libcurl, or in a real nginx (LuaJIT, cosockets, the shared dict).
--
--   local drivers = require "spec.support.drivers"
--   local run = drivers.new{name = "pacing", source = SCENARIOS, client_id = ID, scopes = SCOPES}
--   run:run("libcurl" | "nginx", "scenario", {org_url = URL, max_capacity = 0.5, ...}, args...)
--   run.dir, run.key (the RS256 client-assertion key), run.key_path, run.dpop_path; run:close()
local oktadpop = require "oktadpop"
local cjson = require "cjson"
local nginx = require "spec.support.nginx"
local util = require "spec.support.util"

local M = {}
local Runner = {}
Runner.__index = Runner

function M.new(o)
  local self = setmetatable({name = o.name, client_id = o.client_id, scopes = o.scopes}, Runner)
  self.dir = util.sh("mktemp -d"):gsub("%s+$", "")
  self.key = assert(oktadpop.generate_key("RS256", {kid = o.name}))
  self.key_path, self.dpop_path = self.dir .. "/cc.pem", self.dir .. "/dpop.pem"
  assert(self.key:save_pem(self.key_path, true))
  assert(assert(oktadpop.generate_key("ES256")):save_pem(self.dpop_path, true))
  self.module = o.name .. "_scenarios"
  util.write(self.dir .. "/" .. self.module .. ".lua", o.source)
  self.scenarios = assert(load(o.source, "=" .. self.module))()
  return self
end

-- Runs scenario name(args...) with a client of config cfg (org_url and any options over the
-- defaults; cfg.http: extra nginx http-block lines, nginx only).
function Runner:run(driver, name, cfg, ...)
  local args, options, http = {...}, {}, cfg.http
  for k, v in pairs(cfg) do if k ~= "http" then options[k] = v end end
  if driver == "libcurl" then
    local config = {client_id = self.client_id, scopes = self.scopes, private_key = self.key, retry_base = 0.01}
    for k, v in pairs(options) do config[k] = v end
    local okta = assert(oktadpop.new(config))
    local result = self.scenarios[name](okta, oktadpop.libcurl.clock, (table.unpack or unpack)(args))
    okta:close()
    return result
  end
  local server = nginx.start{dir = self.dir, http = "lua_shared_dict oktadpop 1m;\n" .. (http or ""), server = ([[
    location = /run { content_by_lua_block {
      local cfg = {client_id = %q, scopes = %q, private_key = %q, dpop_key = %q, shared_dict = "oktadpop",
                   retry_base = 0.01}
      for k, v in pairs(require("cjson").decode(%q)) do cfg[k] = v end
      local okta = assert(require("oktadpop.resty").new(cfg))
      local clock = function() ngx.update_time() return ngx.now() end
      local result = require(%q)[%q](okta, clock, unpack(require("cjson").decode(%q)))
      ngx.say(require("cjson").encode(result))
    } }
  ]]):format(self.client_id, self.scopes, self.key_path, self.dpop_path, cjson.encode(options), self.module, name,
             cjson.encode(args))}
  local out = util.sh("curl -s --max-time 120 " .. server.url .. "/run")
  local log = server:error_log()
  server:stop()
  local ok, decoded = pcall(cjson.decode, out)
  assert(ok and type(decoded) == "table", "nginx answered: " .. out .. "\n" .. log)
  return decoded
end

function Runner:close() os.execute("rm -rf " .. self.dir) end

return M
