-- Refresh tokens are single-use: each answer's new refresh token goes back in
-- the pool the next request takes from. REFRESH_TOKENS (prepended by the
-- runner) holds one live token per connection plus spares: wrk asks for one
-- request more than it sends when a thread starts, and that token is lost. The
-- pool runs dry only when a refresh fails, which fails the run anyway.
local pool = {}
local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}

function init(args)
  for _, token in ipairs(REFRESH_TOKENS) do
    table.insert(pool, token)
  end
end

function request()
  local token = table.remove(pool) or "pool-exhausted"
  return wrk.format("POST", "/v1/auth/token", headers,
    "grant_type=refresh_token&refresh_token=" .. token)
end

function on_response(status, body)
  local token = status == 200 and body and body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if token then
    table.insert(pool, token)
  end
end
