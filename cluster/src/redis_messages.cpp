#include "hotswap/cluster/redis_messages.hpp"

#include <algorithm>
#include <charconv>
#include <mutex>
#include <utility>
#include <vector>

#include "hotswap/cluster/redis_client.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/store.hpp"

namespace hotswap {

namespace {

using redis::argv_t;
using redis::is_string;
using redis::reply_ptr;
using redis::reply_string;

// The key layout is in redis_messages.hpp. Every script gets the key prefix
// as ARGV[1] and derives its keys from it (the set of keys a consume touches
// is only known inside the script), so the store needs a standalone Redis or
// a primary with replicas, not Redis Cluster. Lua numbers are doubles: times
// (ms since the epoch) and counters are exact below 2^53, and are written
// back with fmt() because tostring() would switch to exponent notation.
constexpr const char* prelude = R"lua(
local P = ARGV[1]
local function mkey(id) return P .. 'msg:' .. id end
local function dkey(id) return P .. 'dlv:' .. id end
local function skey(prio, topic) return P .. 'stream:' .. prio .. ':' .. topic end
local function gkey(kind, topic, group) return P .. kind .. ':' .. #topic .. ':' .. topic .. ':' .. group end
local function num(s) return tonumber(s) or 0 end
local function fmt(x) return string.format('%.0f', x) end
local function seq_of(sid) return tonumber(string.match(sid, '^(%d+)')) or 0 end

-- One group's delivery of a message, "state:attempts:delivered_at:lease_end:
-- acked_at" (state leased, acked or dead), or nil.
local function parse_dlv(s)
  if not s then return nil end
  local st, a, d, v, k = string.match(s, '^(%a+):(%-?%d+):(%-?%d+):(%-?%d+):(%-?%d+)$')
  if not st then return nil end
  return {state = st, attempts = tonumber(a), delivered = tonumber(d), lease_end = tonumber(v),
          acked = tonumber(k)}
end

local function dlv_string(state, d)
  return state .. ':' .. fmt(d.attempts) .. ':' .. fmt(d.delivered) .. ':' .. fmt(d.lease_end)
         .. ':' .. fmt(d.acked)
end

-- The groups that acknowledged or dead-lettered message `id`.
local function done_groups(id)
  local done = 0
  local d = redis.call('HGETALL', dkey(id))
  for i = 2, #d, 2 do
    local st = string.match(d[i], '^(%a+):')
    if st == 'acked' or st == 'dead' then done = done + 1 end
  end
  return done
end

local function hset_pairs(key, t)
  for i = 1, #t, 200 do
    redis.call('HSET', key, unpack(t, i, math.min(#t, i + 199)))
  end
end

local function hgetall_map(key)
  local flat = redis.call('HGETALL', key)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end

-- Takes a live message out of the lag accounting (acknowledged as a whole,
-- expired or removed): every group of its topic that had not acknowledged
-- or dead-lettered it owes one delivery less.
local function retire(id, topic)
  local mk = mkey(id)
  if redis.call('HGET', mk, 'live') ~= '1' then return end
  redis.call('HSET', mk, 'live', '0')
  redis.call('HINCRBY', P .. 'live', topic, -1)
  local owed = redis.call('SCARD', P .. 'groups:' .. topic) - done_groups(id)
  if owed ~= 0 then redis.call('DECRBY', P .. 'lag', owed) end
end

-- Appends a new message to its topic's log; `fields` holds the field/value
-- pairs besides the ones set here.
local function store(id, topic, prio, expires_at, fields)
  local sid = fmt(redis.call('INCR', P .. 'seq')) .. '-0'
  redis.call('XADD', skey(prio, topic), sid, 'id', id)
  local mk = mkey(id)
  redis.call('HSET', mk, 'id', id, 'topic', topic, 'priority', prio, 'expires_at', expires_at,
             'sid', sid, 'status', '0', 'acknowledged_at', '0', 'group_acked_at', '0',
             'attempts', '0', 'live', '1', 'acked', '0')
  hset_pairs(mk, fields)
  if num(expires_at) ~= 0 then redis.call('ZADD', P .. 'exp:' .. topic, expires_at, id) end
  redis.call('HINCRBY', P .. 'live', topic, 1)
  local groups = redis.call('SCARD', P .. 'groups:' .. topic)
  if groups > 0 then redis.call('INCRBY', P .. 'lag', groups) end
end
)lua";

// ARGV: prefix, id, topic, priority, expires_at, payload, then field/value
// pairs. Replies {'stored'}, {'exists'} (same id, topic and payload) or
// {'conflict', topic-of-the-stored-message}.
constexpr const char* publish_body = R"lua(
local id, topic, prio, expires_at, payload = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local cur = redis.call('HMGET', mkey(id), 'topic', 'payload')
if cur[1] then
  if cur[1] == topic and cur[2] == payload then return {'exists'} end
  return {'conflict', cur[1]}
end
local f = {'payload', payload}
for i = 7, #ARGV do f[#f + 1] = ARGV[i] end
store(id, topic, prio, expires_at, f)
return {'stored'}
)lua";

// ARGV: prefix, topic, group, max, now, ack_deadline, max_attempts,
// backoff_initial, nonce (for the ids of dead-letter copies).
// Replies {redelivered, dead_lettered, expired, {attempts, {message
// field/value pairs}}...}.
constexpr const char* consume_body = R"lua(
local topic, group = ARGV[2], ARGV[3]
local max, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local ack_deadline, max_attempts, backoff = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local nonce = ARGV[9]
local leases = gkey('lease', topic, group)
local pos = gkey('pos', topic, group)
local redelivered, dead, expired = 0, 0, 0
local out = {}

-- 1. A group's first consume: it owes every live message of the topic.
if redis.call('SADD', P .. 'groups:' .. topic, group) == 1 then
  local live = num(redis.call('HGET', P .. 'live', topic))
  if live ~= 0 then redis.call('INCRBY', P .. 'lag', live) end
end

-- 2. Every message of the topic past its expires_at is owed to nobody;
-- a pending or delivered one becomes expired.
local exp_key = P .. 'exp:' .. topic
for _, id in ipairs(redis.call('ZRANGEBYSCORE', exp_key, '-inf', fmt(now))) do
  local mk = mkey(id)
  local st = redis.call('HGET', mk, 'status')
  if st then
    retire(id, topic)
    if st == '0' or st == '1' then
      redis.call('HSET', mk, 'status', '4')
      expired = expired + 1
    end
  end
  redis.call('ZREM', exp_key, id)
end

local copies = 0
local function new_id()
  copies = copies + 1
  local h = redis.sha1hex(nonce .. ':' .. copies)
  local v = tonumber(string.sub(h, 17, 17), 16) % 4 + 1
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-4' .. string.sub(h, 14, 16) .. '-'
         .. string.sub('89ab', v, v) .. string.sub(h, 18, 20) .. '-' .. string.sub(h, 21, 32)
end

local function dead_letter(id, d)
  local mk = mkey(id)
  local m = hgetall_map(mk)
  redis.call('HSET', dkey(id), group, dlv_string('dead', d))
  redis.call('DECR', P .. 'lag')
  redis.call('HSET', mk, 'status', '3')
  local f = {}
  for k, v in pairs(m) do
    if string.sub(k, 1, 2) == 'h:' or k == 'payload' or k == 'schema_version' or k == 'correlation_id'
       or k == 'partition_key' or k == 'published_by' or k == 'tenant_id' then
      f[#f + 1] = k
      f[#f + 1] = v
    end
  end
  local extra = {
    {'h:x-dead-letter-reason', "Not acknowledged by consumer group '" .. group
       .. "' within the ack deadline after " .. fmt(d.attempts) .. ' deliveries (max_attempts).'},
    {'h:x-original-message-id', id}, {'h:x-original-topic', m.topic},
    {'h:x-consumer-group', group}, {'h:x-delivery-attempts', fmt(d.attempts)},
    {'created_at', fmt(now)}}
  for _, kv in ipairs(extra) do
    f[#f + 1] = kv[1]
    f[#f + 1] = kv[2]
  end
  store(new_id(), m.topic .. '.dlq', m.priority, '0', f)
  dead = dead + 1
end

local function deliver(id, n)
  local lease_end = now + ack_deadline + backoff * 2 ^ math.min(n - 1, 30)
  redis.call('HSET', dkey(id), group,
             dlv_string('leased', {attempts = n, delivered = now, lease_end = lease_end, acked = 0}))
  redis.call('ZADD', leases, fmt(lease_end), id)
  local mk = mkey(id)
  local m = redis.call('HMGET', mk, 'status', 'attempts')
  if m[1] == '0' then redis.call('HSET', mk, 'status', '1') end
  if n > num(m[2]) then redis.call('HSET', mk, 'attempts', fmt(n)) end
  if n > 1 then redelivered = redelivered + 1 end
  out[#out + 1] = {n, redis.call('HGETALL', mk)}
end

-- 3. Leases that ended: dead-letter after max_attempts (oldest first),
-- redeliver the others (by priority and age, below), forget what is no
-- longer owed (acknowledged as a whole, expired, removed).
local again, due_dead = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', fmt(now))) do
  local m = redis.call('HMGET', mkey(id), 'live', 'priority', 'sid')
  local d = parse_dlv(redis.call('HGET', dkey(id), group))
  if m[1] ~= '1' or not d or d.state ~= 'leased' then
    redis.call('ZREM', leases, id)
  elseif d.attempts >= max_attempts then
    redis.call('ZREM', leases, id)
    due_dead[#due_dead + 1] = {seq = seq_of(m[3]), id = id, d = d}
  else
    local pr = num(m[2])
    again[pr] = again[pr] or {}
    table.insert(again[pr], {seq = seq_of(m[3]), id = id, n = d.attempts + 1})
  end
end
table.sort(due_dead, function(a, b) return a.seq < b.seq end)
for _, x in ipairs(due_dead) do dead_letter(x.id, x.d) end

-- 4. Highest priority first; within one, the redeliveries (all read
-- before) and then the log after the group's position, oldest first.
for pr = 9, 0, -1 do
  if #out >= max then break end
  local cs = again[pr]
  if cs then
    table.sort(cs, function(a, b) return a.seq < b.seq end)
    for _, c in ipairs(cs) do
      if #out >= max then break end
      deliver(c.id, c.n)
    end
  end
  local field = 'p' .. pr
  local last = redis.call('HGET', pos, field) or '0-0'
  local moved = false
  while #out < max do
    local count = math.min(1000, math.max(16, max - #out))
    local batch = redis.call('XRANGE', skey(pr, topic), '(' .. last, '+', 'COUNT', fmt(count))
    if #batch == 0 then break end
    for _, e in ipairs(batch) do
      if #out >= max then break end
      last = e[1]
      moved = true
      local id = e[2][2]
      if redis.call('HGET', mkey(id), 'live') == '1'
         and redis.call('HEXISTS', dkey(id), group) == 0 then
        deliver(id, 1)
      end
    end
  end
  if moved then redis.call('HSET', pos, field, last) end
end

local reply = {redelivered, dead, expired}
for _, x in ipairs(out) do reply[#reply + 1] = x end
return reply
)lua";

// ARGV: prefix, id, group ('' = as a whole), now.
// Replies {'ok', attempts, acked_at, {message field/value pairs}} (attempts
// and acked_at of the group; 0 for a whole acknowledgement),
// {'not_found'} or {'conflict', why}.
constexpr const char* acknowledge_body = R"lua(
local id, group, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local mk = mkey(id)
local m = redis.call('HMGET', mk, 'topic', 'live', 'acked', 'status', 'group_acked_at')
if not m[1] then return {'not_found'} end
local topic = m[1]
if group == '' then
  if m[3] ~= '1' then
    retire(id, topic)
    -- Every group's open lease ends acknowledged.
    local ds = redis.call('HGETALL', dkey(id))
    for i = 1, #ds, 2 do
      local d = parse_dlv(ds[i + 1])
      if d and d.state == 'leased' then
        d.acked = now
        redis.call('HSET', dkey(id), ds[i], dlv_string('acked', d))
        redis.call('ZREM', gkey('lease', topic, ds[i]), id)
      end
    end
    redis.call('HSET', mk, 'acked', '1', 'acknowledged_at', fmt(now), 'status', '2')
  end
  return {'ok', 0, '0', redis.call('HGETALL', mk)}
end
local d = parse_dlv(redis.call('HGET', dkey(id), group))
if not d then return {'conflict', 'it was never delivered to consumer group ' .. group} end
if d.state == 'dead' then
  return {'conflict', 'it was dead-lettered for consumer group ' .. group
                      .. ' and can no longer be acknowledged by it'}
end
if d.state == 'leased' then
  d.acked = now
  redis.call('HSET', dkey(id), group, dlv_string('acked', d))
  redis.call('ZREM', gkey('lease', topic, group), id)
  if m[2] == '1' then redis.call('DECR', P .. 'lag') end
  if now > num(m[5]) then redis.call('HSET', mk, 'group_acked_at', fmt(now)) end
  -- Acknowledged as a whole once no group of the topic owes it any more.
  if (m[4] == '0' or m[4] == '1')
     and redis.call('SCARD', P .. 'groups:' .. topic) <= done_groups(id) then
    redis.call('HSET', mk, 'status', '2')
  end
end
return {'ok', d.attempts, fmt(d.acked), redis.call('HGETALL', mk)}
)lua";

// ARGV: prefix, id. Replies {'ok'} or {'not_found'}. The leases of the
// message are dropped by the next consume of each group.
constexpr const char* remove_body = R"lua(
local id = ARGV[2]
local m = redis.call('HMGET', mkey(id), 'topic', 'priority', 'sid')
if not m[1] then return {'not_found'} end
retire(id, m[1])
redis.call('XDEL', skey(m[2], m[1]), m[3])
redis.call('ZREM', P .. 'exp:' .. m[1], id)
redis.call('DEL', mkey(id), dkey(id))
return {'ok'}
)lua";

// ARGV: prefix, topic, limit. Replies {{message field/value pairs}...},
// newest first: the newest `limit` entries of each priority's log, merged.
constexpr const char* list_body = R"lua(
local topic, limit = ARGV[2], tonumber(ARGV[3])
local all = {}
for pr = 0, 9 do
  for _, e in ipairs(redis.call('XREVRANGE', skey(pr, topic), '+', '-', 'COUNT', limit)) do
    all[#all + 1] = {seq = seq_of(e[1]), sid = e[1], id = e[2][2]}
  end
end
table.sort(all, function(a, b) return a.seq > b.seq end)
local out, seen = {}, {}
for _, e in ipairs(all) do
  if #out >= limit then break end
  if not seen[e.id] then
    seen[e.id] = true
    local mk = mkey(e.id)
    if redis.call('HGET', mk, 'sid') == e.sid then out[#out + 1] = redis.call('HGETALL', mk) end
  end
end
return out
)lua";

/// Larger `max` and `limit` arguments mean "all" and are cut to this, which
/// Lua and Redis' COUNT both take exactly.
constexpr size_t max_count = 1'000'000'000;

struct script {
  const char* name;
  std::string text;
  std::string sha; ///< empty until loaded (again, after Redis forgot it)
};

int64_t to_int(const std::string& s) {
  int64_t x = 0;
  std::from_chars(s.data(), s.data() + s.size(), x);
  return x;
}

/// A message from the field/value pairs of its hash.
message_record to_message(const redisReply* flat) {
  message_record m;
  millis group_acked_at = 0;
  for (size_t i = 0; i + 1 < flat->elements; i += 2) {
    auto k = reply_string(flat->element[i]);
    auto v = reply_string(flat->element[i + 1]);
    if (k.rfind("h:", 0) == 0)
      m.headers.emplace(k.substr(2), std::move(v));
    else if (k == "id")
      m.id = std::move(v);
    else if (k == "topic")
      m.topic = std::move(v);
    else if (k == "payload")
      m.payload = std::move(v);
    else if (k == "schema_version")
      m.schema_version = std::move(v);
    else if (k == "correlation_id")
      m.correlation_id = std::move(v);
    else if (k == "priority")
      m.priority = static_cast<int32_t>(to_int(v));
    else if (k == "expires_at")
      m.expires_at = to_int(v);
    else if (k == "partition_key")
      m.partition_key = std::move(v);
    else if (k == "created_at")
      m.created_at = to_int(v);
    else if (k == "status")
      m.status = static_cast<int32_t>(to_int(v));
    else if (k == "acknowledged_at")
      m.acknowledged_at = to_int(v);
    else if (k == "attempts")
      m.delivery_attempts = static_cast<int32_t>(to_int(v));
    else if (k == "group_acked_at")
      group_acked_at = to_int(v);
    else if (k == "published_by")
      m.published_by = std::move(v);
    else if (k == "tenant_id")
      m.tenant_id = std::move(v);
    // sid, live, acked: bookkeeping.
  }
  // Acknowledged by every group that owed it, not as a whole: when the
  // last group acknowledged it (as the SQL store shows it).
  if (m.status == static_cast<int32_t>(message_status::acknowledged) && m.acknowledged_at == 0)
    m.acknowledged_at = group_acked_at;
  return m;
}

bool is_array(const redisReply* r, size_t min_elements = 0) {
  return r->type == REDIS_REPLY_ARRAY && r->elements >= min_elements;
}

bool is_flat_strings(const redisReply* r) {
  if (!is_array(r) || r->elements % 2 != 0)
    return false;
  for (size_t i = 0; i < r->elements; ++i)
    if (!is_string(r->element[i]))
      return false;
  return true;
}

class redis_message_store final : public message_store {
public:
  redis_message_store(redis::client_options co, std::string prefix)
    : redis_(std::move(co)), prefix_(std::move(prefix)) {
  }

  caf::expected<bool> publish(const message_record& m) override {
    if (m.id.empty() || m.topic.empty())
      return caf::make_error(errc::invalid_argument, "a message needs an id and a topic");
    if (m.priority < 0 || m.priority > 9)
      return caf::make_error(errc::invalid_argument,
                             "priority must be 0-9, got " + std::to_string(m.priority));
    argv_t args{prefix_,
                m.id,
                m.topic,
                std::to_string(m.priority),
                std::to_string(m.expires_at),
                m.payload,
                "schema_version",
                m.schema_version,
                "correlation_id",
                m.correlation_id,
                "partition_key",
                m.partition_key,
                "created_at",
                std::to_string(m.created_at != 0 ? m.created_at : now_millis()),
                "published_by",
                m.published_by,
                "tenant_id",
                m.tenant_id};
    for (const auto& [k, v] : m.headers) {
      args.push_back("h:" + k);
      args.push_back(v);
    }
    std::lock_guard<std::mutex> guard{mtx_};
    auto r = eval(publish_, args);
    if (!r)
      return std::move(r.error());
    auto rep = r->get();
    if (!is_array(rep, 1) || !is_string(rep->element[0]))
      return unexpected(publish_);
    auto outcome = reply_string(rep->element[0]);
    if (outcome == "stored")
      return true;
    if (outcome == "exists")
      return false;
    if (outcome == "conflict" && rep->elements == 2 && is_string(rep->element[1])) {
      auto topic = reply_string(rep->element[1]);
      return caf::make_error(errc::conflict,
                             "message " + m.id + " exists with "
                               + (topic == m.topic ? "another payload"
                                                   : "another topic (" + topic + ")"));
    }
    return unexpected(publish_);
  }

  caf::expected<std::optional<message_record>> get(const std::string& id) override {
    std::lock_guard<std::mutex> guard{mtx_};
    auto r = command({"HGETALL", prefix_ + "msg:" + id}, "get");
    if (!r)
      return std::move(r.error());
    auto rep = r->get();
    if (!is_flat_strings(rep))
      return failure("get", "unexpected HGETALL reply");
    if (rep->elements == 0)
      return std::optional<message_record>{};
    return std::optional<message_record>{to_message(rep)};
  }

  caf::expected<std::vector<message_record>> list_topic(const std::string& topic,
                                                        size_t limit) override {
    std::vector<message_record> out;
    if (limit == 0)
      return out;
    std::lock_guard<std::mutex> guard{mtx_};
    auto r = eval(list_, {prefix_, topic, std::to_string(std::min(limit, max_count))});
    if (!r)
      return std::move(r.error());
    auto rep = r->get();
    if (!is_array(rep))
      return unexpected(list_);
    for (size_t i = 0; i < rep->elements; ++i) {
      if (!is_flat_strings(rep->element[i]))
        return unexpected(list_);
      out.push_back(to_message(rep->element[i]));
    }
    return out;
  }

  caf::expected<consume_result> consume(const std::string& topic, const std::string& group,
                                        size_t max, millis now,
                                        const message_policy& policy) override {
    if (topic.empty() || group.empty())
      return caf::make_error(errc::invalid_argument, "consume needs a topic and a group");
    // Like the SQL store: nothing to hand out, nothing done (the group is
    // not created either).
    if (max == 0)
      return consume_result{};
    std::lock_guard<std::mutex> guard{mtx_};
    auto r = eval(consume_, {prefix_, topic, group, std::to_string(std::min(max, max_count)),
                             std::to_string(now),
                             std::to_string(policy.ack_deadline),
                             std::to_string(std::max<int32_t>(1, policy.max_attempts)),
                             std::to_string(std::max<millis>(0, policy.backoff_initial)),
                             crypto::random_hex(16)});
    if (!r)
      return std::move(r.error());
    auto rep = r->get();
    if (!is_array(rep, 3))
      return unexpected(consume_);
    for (size_t i = 0; i < 3; ++i)
      if (rep->element[i]->type != REDIS_REPLY_INTEGER)
        return unexpected(consume_);
    consume_result out;
    out.redelivered = static_cast<int32_t>(rep->element[0]->integer);
    out.dead_lettered = static_cast<int32_t>(rep->element[1]->integer);
    out.expired = static_cast<int32_t>(rep->element[2]->integer);
    for (size_t i = 3; i < rep->elements; ++i) {
      auto x = rep->element[i];
      if (!is_array(x, 2) || x->element[0]->type != REDIS_REPLY_INTEGER
          || !is_flat_strings(x->element[1]))
        return unexpected(consume_);
      auto m = to_message(x->element[1]);
      m.delivery_attempts = static_cast<int32_t>(x->element[0]->integer);
      out.messages.push_back(std::move(m));
    }
    return out;
  }

  caf::expected<message_record> acknowledge(const std::string& id, const std::string& group,
                                            millis now) override {
    std::lock_guard<std::mutex> guard{mtx_};
    auto r = eval(acknowledge_, {prefix_, id, group, std::to_string(now)});
    if (!r)
      return std::move(r.error());
    auto rep = r->get();
    if (!is_array(rep, 1) || !is_string(rep->element[0]))
      return unexpected(acknowledge_);
    auto outcome = reply_string(rep->element[0]);
    if (outcome == "not_found")
      return caf::make_error(errc::not_found, "message " + id + " does not exist");
    if (outcome == "conflict" && rep->elements == 2 && is_string(rep->element[1]))
      return caf::make_error(errc::conflict, "group " + group + " cannot acknowledge message "
                                               + id + ": " + reply_string(rep->element[1]));
    if (outcome != "ok" || rep->elements != 4 || rep->element[1]->type != REDIS_REPLY_INTEGER
        || !is_string(rep->element[2]) || !is_flat_strings(rep->element[3]))
      return unexpected(acknowledge_);
    auto m = to_message(rep->element[3]);
    if (!group.empty()) {
      // As the group sees it.
      m.status = static_cast<int32_t>(message_status::acknowledged);
      m.acknowledged_at = to_int(reply_string(rep->element[2]));
      m.delivery_attempts = static_cast<int32_t>(rep->element[1]->integer);
    }
    return m;
  }

  caf::expected<void> remove(const std::string& id) override {
    std::lock_guard<std::mutex> guard{mtx_};
    auto r = eval(remove_, {prefix_, id});
    if (!r)
      return std::move(r.error());
    auto rep = r->get();
    if (!is_array(rep, 1) || !is_string(rep->element[0]))
      return unexpected(remove_);
    auto outcome = reply_string(rep->element[0]);
    if (outcome == "not_found")
      return caf::make_error(errc::not_found, "message " + id + " does not exist");
    if (outcome != "ok")
      return unexpected(remove_);
    return {};
  }

  caf::expected<int64_t> lag() override {
    std::lock_guard<std::mutex> guard{mtx_};
    auto r = command({"GET", prefix_ + "lag"}, "lag");
    if (!r)
      return std::move(r.error());
    auto rep = r->get();
    if (rep->type == REDIS_REPLY_NIL)
      return int64_t{0};
    auto text = is_string(rep) ? reply_string(rep) : std::string{};
    int64_t x = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size())
      return failure("lag", prefix_ + "lag does not hold a number");
    return x;
  }

private:
  caf::error failure(const std::string& what, const std::string& why) const {
    return caf::make_error(errc::store_failure, "message store " + redis_.options().url + ": "
                                                  + what + " failed: " + why);
  }

  caf::error unexpected(const script& s) const {
    return failure(s.name, "unexpected reply from the script");
  }

  /// One command; an error reply is errc::store_failure.
  caf::expected<reply_ptr> command(const argv_t& cmd, const char* what) {
    auto rs = redis_.pipeline({cmd});
    if (!rs)
      return std::move(rs.error());
    auto r = std::move(rs->front());
    if (r->type == REDIS_REPLY_ERROR)
      return failure(what, reply_string(r.get()));
    return r;
  }

  /// Runs `s` by SHA1, loading it first and again after Redis forgot it
  /// (restart, SCRIPT FLUSH). Not the client's eval: a script that fails is
  /// a store failure here, not an unreachable Redis.
  caf::expected<reply_ptr> eval(script& s, const argv_t& args) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (s.sha.empty()) {
        auto loaded = command({"SCRIPT", "LOAD", s.text}, s.name);
        if (!loaded)
          return std::move(loaded.error());
        if (!is_string(loaded->get()))
          return failure(s.name, "SCRIPT LOAD returned no SHA1");
        s.sha = reply_string(loaded->get());
      }
      argv_t cmd{"EVALSHA", s.sha, "0"};
      cmd.insert(cmd.end(), args.begin(), args.end());
      auto rs = redis_.pipeline({cmd});
      if (!rs)
        return std::move(rs.error());
      auto r = std::move(rs->front());
      if (r->type != REDIS_REPLY_ERROR)
        return r;
      auto msg = reply_string(r.get());
      if (msg.rfind("NOSCRIPT", 0) != 0)
        return failure(s.name, msg);
      s.sha.clear();
    }
    return failure(s.name, "the script vanished twice while loading");
  }

  std::mutex mtx_;
  redis::client redis_;
  std::string prefix_;
  script publish_{"publish", std::string{prelude} + publish_body, {}};
  script consume_{"consume", std::string{prelude} + consume_body, {}};
  script acknowledge_{"acknowledge", std::string{prelude} + acknowledge_body, {}};
  script remove_{"remove", std::string{prelude} + remove_body, {}};
  script list_{"list_topic", std::string{prelude} + list_body, {}};
};

} // namespace

caf::expected<std::unique_ptr<message_store>>
open_redis_message_store(const std::string& url, const std::string& key_prefix,
                         std::chrono::milliseconds connect_timeout,
                         std::chrono::milliseconds command_timeout) {
  auto co = redis::options_for(url, "message store", "store", connect_timeout, command_timeout);
  if (!co)
    return std::move(co.error());
  if (key_prefix.empty())
    return caf::make_error(errc::config_invalid, "the Redis key prefix must not be empty");
  // Calls queued behind an unreachable Redis fail at once for a connect
  // timeout; after a lost connection the next call reconnects at once.
  co->connect_backoff = connect_timeout;
  co->io_backoff = std::chrono::milliseconds{0};
  return std::unique_ptr<message_store>{
    std::make_unique<redis_message_store>(std::move(*co), key_prefix)};
}

} // namespace hotswap
