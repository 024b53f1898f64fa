-- Cycles through REQUESTS (prepended by the runner: {method, path, headers, body}
-- each), formatted once in init(): rotating users, tokens and bodies cost the
-- load generator nothing per request.
local prepared = {}
local next_index = 0

function init(args)
  for i, r in ipairs(REQUESTS) do
    prepared[i] = wrk.format(r[1], r[2], r[3], r[4])
  end
end

function request()
  next_index = next_index % #prepared + 1
  return prepared[next_index]
end
