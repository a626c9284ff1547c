-- The lease script of `spillway::global::lease` (Redis 7; the module doc gives the protocol).
--
-- KEYS[1]: the tenant's hash (`tenant_key`). Its fields, per process P and resource R:
--   exp:P       when P's lease expires, in milliseconds of Redis's clock
--   has:R:P     P's granted share of R, per second
--   wants:R:P   P's demand of R, per second
-- Resource names hold no ':'; process names may.
--
-- Lease:   ARGV = P, lease_ms, then per demand: R, capacity, wants (integers, per second).
--          Returns one integer grant per demand, in request order.
-- Release: ARGV = P, 'release'. Deletes P's fields. Returns an empty array.
--
-- Every value is an integer below 2^53 (the caller clamps), so Lua's doubles hold it exactly;
-- `digits` writes one into the hash in full (Lua's own conversion keeps 14 digits).

local function digits(value) return string.format('%d', value) end

-- `parent[name]`, a table, made empty on first use.
local function table_in(parent, name)
    local child = parent[name]
    if child == nil then
        child = {}
        parent[name] = child
    end
    return child
end

local key = KEYS[1]
local caller = ARGV[1]
if caller == nil or ARGV[2] == nil then
    return redis.error_reply('spillway lease: ARGV must start with process, lease_ms')
end

local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- One pass over the hash: each process's fields, its expiry, and per resource what every
-- process has and wants.
local fields_of = {}
local expiry_of = {}
local has = {}
local wants = {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do
    local field, value = flat[i], tonumber(flat[i + 1])
    local kind, rest = string.match(field, '^(%a+):(.*)$')
    local resource, process
    if kind == 'exp' then
        process = rest
        expiry_of[process] = value
    elseif kind == 'has' or kind == 'wants' then
        resource, process = string.match(rest, '^([^:]*):(.*)$')
    end
    if process ~= nil then
        local own = table_in(fields_of, process)
        own[#own + 1] = field
        if resource ~= nil then
            local table_of = (kind == 'has') and has or wants
            table_in(table_of, resource)[process] = value
        end
    end
end

-- Deletes every field of a process and forgets it.
local function drop(process)
    local own = fields_of[process]
    if own ~= nil then
        -- HDEL takes them in batches: unpack is bounded by Lua's stack.
        for first = 1, #own, 1000 do
            redis.call('HDEL', key, unpack(own, first, math.min(first + 999, #own)))
        end
    end
    fields_of[process] = nil
    expiry_of[process] = nil
    for _, per_process in pairs(has) do per_process[process] = nil end
    for _, per_process in pairs(wants) do per_process[process] = nil end
end

-- Step 1: a process whose lease has expired, or with fields but no expiry, is gone.
local gone = {}
for process, _ in pairs(fields_of) do
    local expiry = expiry_of[process]
    if expiry == nil or expiry <= now_ms then gone[#gone + 1] = process end
end
for _, process in ipairs(gone) do drop(process) end

if ARGV[2] == 'release' then
    drop(caller)
    return {}
end

local lease_ms = tonumber(ARGV[2])
if lease_ms == nil or lease_ms < 1 or (#ARGV - 2) % 3 ~= 0 then
    return redis.error_reply('spillway lease: expected process, lease_ms >= 1, then triples')
end

-- Max-min fair allocation of capacity over demands (process -> wants): ascending demand
-- (ties by name, so the rounding is the same in every call), each gets its demand or an
-- equal share of what is left, whichever is less; what is left once every demand is met is
-- split equally as headroom. Integers throughout: shares are floors.
local function allocate(capacity, demands)
    local order = {}
    for process, wanted in pairs(demands) do order[#order + 1] = { process, wanted } end
    table.sort(order, function(a, b)
        if a[2] ~= b[2] then return a[2] < b[2] end
        return a[1] < b[1]
    end)
    local allocation = {}
    local remaining = capacity
    for i, entry in ipairs(order) do
        local share = math.floor(remaining / (#order - i + 1))
        local given = math.min(entry[2], share)
        allocation[entry[1]] = given
        remaining = remaining - given
    end
    local headroom = math.floor(remaining / #order)
    for process, given in pairs(allocation) do allocation[process] = given + headroom end
    return allocation
end

-- Steps 2 to 4, per demand: record the caller's demand, allocate, grant what the others
-- leave free.
local grants = {}
for i = 3, #ARGV, 3 do
    local resource, capacity, wanted = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if capacity == nil or wanted == nil or capacity < 0 or wanted < 0
        or string.find(resource, ':', 1, true) ~= nil then
        return redis.error_reply('spillway lease: bad demand ' .. tostring(resource))
    end
    local demands = table_in(wants, resource)
    demands[caller] = wanted
    local allocation = allocate(capacity, demands)
    local others_have = 0
    for process, share in pairs(has[resource] or {}) do
        if process ~= caller then others_have = others_have + share end
    end
    local grant = math.max(0, math.min(allocation[caller], capacity - others_have))
    redis.call('HSET', key, 'has:' .. resource .. ':' .. caller, digits(grant),
        'wants:' .. resource .. ':' .. caller, digits(wanted))
    grants[#grants + 1] = grant
end

local caller_expiry = now_ms + lease_ms
redis.call('HSET', key, 'exp:' .. caller, digits(caller_expiry))
expiry_of[caller] = caller_expiry
-- The hash outlives its longest lease by one lease period of the caller's (2 x lease_ms
-- when every process leases for the same time), so an idle tenant's hash vanishes.
local last_expiry = caller_expiry
for _, expiry in pairs(expiry_of) do
    if expiry > last_expiry then last_expiry = expiry end
end
redis.call('PEXPIRE', key, digits(last_expiry - now_ms + lease_ms))
return grants
