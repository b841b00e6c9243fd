-- berth's dynamic upstreams (written by berth into <conf dir>/_berth/berth.lua; do not edit).
-- Members live in the shared dict `berth_members` (app -> the text of <app>.members); berth
-- pushes them through the admin server on a unix socket. An app absent from the dict (nginx
-- just started) is read once from <conf dir>/<app>.members, what berth last wrote.
local balancer = require "ngx.balancer"

local _M = {}
local dict = ngx.shared.berth_members
local conf_dir = "."
local parsed = {}   -- per worker: app -> { text = ..., list = { {address, host, port} } }
local next_pick = {} -- per worker: app -> round-robin position
local down_until = {} -- per worker: address -> ngx.now() before which it is skipped
local FAIL_TIMEOUT = 2 -- seconds a failed member is skipped (max_fails=1 fail_timeout=2s)
local MAX_TRIES = 3    -- proxy_next_upstream_tries

function _M.init(dir)
    conf_dir = dir
end

local function text_of(app)
    local text = dict:get(app)
    if text ~= nil then
        return text
    end
    local file = io.open(conf_dir .. "/" .. app .. ".members", "r")
    text = ""
    if file then
        text = file:read("*a") or ""
        file:close()
    end
    -- add, not set: a push that raced this read wins.
    dict:add(app, text)
    return dict:get(app) or text
end

local function members(app)
    local text = text_of(app)
    local cached = parsed[app]
    if cached and cached.text == text then
        return cached.list
    end
    local list = {}
    for line in text:gmatch("[^\n]+") do
        local host, port = line:match("^%s*([^#%s][^%s]*):(%d+)%s*$")
        if host then
            list[#list + 1] = { line:match("^%s*(.-)%s*$"), host, tonumber(port) }
        end
    end
    parsed[app] = { text = text, list = list }
    return list
end

-- access phase: 503 while the app has no member.
function _M.access(app)
    if #members(app) > 0 then
        return
    end
    ngx.status = 503
    ngx.header["Content-Type"] = "text/plain"
    ngx.say("no healthy replicas for app " .. app)
    return ngx.exit(ngx.HTTP_OK)
end

-- balancer phase: round robin over the members, skipping those tried by this request and
-- those that failed within FAIL_TIMEOUT (unless every member did).
function _M.balance(app)
    local list = members(app)
    local n = #list
    if n == 0 then
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    local ctx = ngx.ctx
    local now = ngx.now()
    if ctx.berth_tried == nil then
        ctx.berth_tried = {}
        if n > 1 then
            balancer.set_more_tries(math.min(n, MAX_TRIES) - 1)
        end
    elseif ctx.berth_peer ~= nil and balancer.get_last_failure() ~= nil then
        down_until[ctx.berth_peer] = now + FAIL_TIMEOUT
    end
    local start = next_pick[app] or 0
    local pick, fallback
    for i = 1, n do
        local index = (start + i - 1) % n + 1
        local member = list[index]
        if not ctx.berth_tried[member[1]] then
            if (down_until[member[1]] or 0) <= now then
                pick = index
                break
            end
            fallback = fallback or index
        end
    end
    pick = pick or fallback or (start % n + 1)
    next_pick[app] = pick
    local member = list[pick]
    ctx.berth_tried[member[1]] = true
    ctx.berth_peer = member[1]
    local ok, err = balancer.set_current_peer(member[2], member[3])
    if not ok then
        ngx.log(ngx.ERR, "berth: cannot use member ", member[1], " of ", app, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

-- admin server: PUT /members/<app> sets the list (the body is <app>.members), DELETE
-- forgets it, GET shows it; every answer's body is what the dict now holds.
function _M.admin()
    local app = ngx.var.uri:match("^/members/([a-z0-9-]+)$")
    if app == nil then
        return ngx.exit(ngx.HTTP_NOT_FOUND)
    end
    local method = ngx.req.get_method()
    if method == "PUT" then
        ngx.req.read_body()
        local body = ngx.req.get_body_data() or ""
        local ok, err = dict:set(app, body)
        if not ok then
            ngx.status = 500
            ngx.say("cannot store the members: ", err)
            return ngx.exit(ngx.HTTP_OK)
        end
    elseif method == "DELETE" then
        dict:delete(app)
        parsed[app] = nil
        ngx.print("")
        return ngx.exit(ngx.HTTP_OK)
    elseif method ~= "GET" then
        return ngx.exit(ngx.HTTP_NOT_ALLOWED)
    end
    local text = dict:get(app)
    if text == nil then
        return ngx.exit(ngx.HTTP_NOT_FOUND)
    end
    ngx.print(text)
end

return _M
