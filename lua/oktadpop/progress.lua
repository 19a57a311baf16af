-- oktadpop.progress: the command's progress on stderr. At a terminal, one line that updates in
-- place: items so far, their rate, and what the client waits for and until when. Anywhere, a
-- wait longer than five seconds is announced on a line of its own with the server's figures,
-- so a slow run is never silent. `--quiet` turns both off.
local M = {}

-- Waits longer than this are announced even when stderr is not a terminal.
M.ANNOUNCE_SECONDS = 5

local REASONS = {
  ratelimit = "pacing within the rate limit",
  retry = "rate limited (429), retrying",
  server_error = "server error or lost connection, retrying",
  poll = "no new events, polling again",
  queue = "waiting for a request slot",
  token_lock = "waiting for the token another request is fetching",
}

local function clock(t) return os.date("%H:%M:%S", math.floor(t + 0.5)) end

--- What a wait (the client's on_wait table) is, in words, with the server's figures.
function M.describe(wait)
  local parts = {("%s: %.0f s, until %s"):format(REASONS[wait.reason] or wait.reason, wait.seconds, clock(wait.until_time))}
  if wait.bucket then
    local figures = {wait.bucket}
    if wait.limit then figures[#figures + 1] = ("limit %d a minute"):format(wait.limit) end
    if wait.remaining then figures[#figures + 1] = ("%d remaining"):format(wait.remaining) end
    if wait.reset then figures[#figures + 1] = ("resets at %s"):format(clock(wait.reset)) end
    parts[#parts + 1] = "(" .. table.concat(figures, ", ") .. ")"
  end
  return table.concat(parts, " ")
end

--- A progress reporter: new{label=, terminal=, quiet=, err= (default io.stderr)}.
function M.new(opts)
  local self = {label = opts.label, terminal = opts.terminal and not opts.quiet, quiet = opts.quiet,
                err = opts.err or io.stderr, count = 0, failed = 0, started = os.time(), drawn = nil, status = nil}

  local function line()
    local unit = self.unit or (self.count == 1 and "item" or "items")
    local text = self.label .. ": " .. self.count .. (self.total and "/" .. self.total or "") .. " " .. unit
    if self.failed > 0 then text = text .. ", " .. self.failed .. " failed" end
    local elapsed = os.time() - self.started
    if elapsed > 0 and self.count > 0 then text = text .. (", %.0f/s"):format(self.count / elapsed) end
    if self.status then text = text .. "; " .. self.status end
    return text
  end

  -- Redraws the terminal line (at most once a second unless forced).
  function self:draw(force)
    if not self.terminal then return end
    local now = os.time()
    if not force and self.drawn == now then return end
    self.drawn = now
    self.err:write("\r\27[K", line())
    self.err:flush()
  end

  --- Clears the line, so that something else can be written at the terminal; the next
  -- update draws it again.
  function self:clear()
    if self.terminal and self.drawn then
      self.err:write("\r\27[K")
      self.err:flush()
      self.drawn = nil
    end
  end

  --- Shows a status (e.g. "contacting the org") until the next item.
  function self:note(text)
    self.status = text
    self:draw(true)
  end

  --- One more item (failed: it was a failure).
  function self:item(failed)
    self.count = self.count + 1
    if failed then self.failed = self.failed + 1 end
    self.status = nil
    self:draw(self.count == 1)
  end

  --- The client's on_wait hook.
  function self:wait(wait)
    if self.quiet then return end
    if wait.seconds > M.ANNOUNCE_SECONDS then
      self:clear()
      self.err:write("oktadpop: ", self.label, ": ", M.describe(wait), "\n")
      self.err:flush()
    end
    if self.terminal then self:note(M.describe(wait)) end
  end

  --- Ends the line's life: cleared, never drawn again.
  function self:done()
    self:clear()
    self.terminal = false
  end

  return self
end

return M
