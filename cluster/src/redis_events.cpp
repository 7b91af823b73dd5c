#include "hotswap/cluster/redis_events.hpp"

#include <algorithm>

#include "hotswap/cluster/redis_client.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/store.hpp"

namespace hotswap {

namespace {

using redis::argv_t;
using redis::reply_string;

/// Field names of one stream entry.
constexpr const char* f_type = "type";
constexpr const char* f_exec = "exec";
constexpr const char* f_tenant = "tenant";
constexpr const char* f_status = "status";
constexpr const char* f_stage = "stage";
constexpr const char* f_progress = "progress";
constexpr const char* f_at = "at";
constexpr const char* f_details = "details";

/// An entry of XRANGE / XREAD: [id, [field, value, ...]].
caf::expected<event_record> read_entry(const redisReply* e) {
  if (e == nullptr || e->type != REDIS_REPLY_ARRAY || e->elements != 2
      || !redis::is_string(e->element[0]) || e->element[1]->type != REDIS_REPLY_ARRAY)
    return caf::make_error(errc::store_failure, "event log: malformed stream entry");
  event_record ev;
  ev.id = reply_string(e->element[0]);
  auto fields = e->element[1];
  for (size_t i = 0; i + 1 < fields->elements; i += 2) {
    auto name = reply_string(fields->element[i]);
    auto value = reply_string(fields->element[i + 1]);
    if (name == f_type)
      ev.type = std::move(value);
    else if (name == f_exec)
      ev.execution_id = std::move(value);
    else if (name == f_tenant)
      ev.tenant_id = std::move(value);
    else if (name == f_status)
      ev.status = std::move(value);
    else if (name == f_stage)
      ev.stage = std::move(value);
    else if (name == f_progress)
      ev.progress = std::atoi(value.c_str());
    else if (name == f_at)
      ev.timestamp = std::atoll(value.c_str());
    else if (name == f_details)
      ev.details = std::move(value);
  }
  return ev;
}

caf::expected<std::vector<event_record>> read_entries(const redisReply* arr) {
  std::vector<event_record> out;
  if (arr == nullptr || arr->type == REDIS_REPLY_NIL)
    return out;
  if (arr->type != REDIS_REPLY_ARRAY)
    return caf::make_error(errc::store_failure, "event log: unexpected reply to a stream read");
  out.reserve(arr->elements);
  for (size_t i = 0; i < arr->elements; ++i) {
    auto ev = read_entry(arr->element[i]);
    if (!ev)
      return std::move(ev.error());
    out.push_back(std::move(*ev));
  }
  return out;
}

class redis_event_log final : public event_log {
public:
  redis_event_log(redis::client_options co, redis::client_options tail, std::string key)
    : client_(std::move(co)), tail_opts_(std::move(tail)), key_(std::move(key)) {
  }

  caf::expected<std::vector<event_record>> append(std::vector<event_record> evs) override {
    if (evs.empty())
      return evs;
    auto now = now_millis();
    std::vector<argv_t> cmds;
    cmds.reserve(evs.size());
    for (auto& ev : evs) {
      if (ev.timestamp == 0)
        ev.timestamp = now;
      cmds.push_back({"XADD", key_, "*", f_type, ev.type, f_exec, ev.execution_id, f_tenant,
                      ev.tenant_id, f_status, ev.status, f_stage, ev.stage, f_progress,
                      std::to_string(ev.progress), f_at, std::to_string(ev.timestamp),
                      f_details, ev.details.empty() ? std::string{"{}"} : ev.details});
    }
    auto replies = client_.pipeline(cmds);
    if (!replies)
      return std::move(replies.error());
    for (size_t i = 0; i < evs.size(); ++i) {
      auto r = (*replies)[i].get();
      if (!redis::is_string(r))
        return caf::make_error(errc::store_failure,
                               "event log: XADD failed: " + reply_string(r));
      evs[i].id = reply_string(r);
    }
    return evs;
  }

  caf::expected<std::vector<event_record>> read_after(const std::string& after, size_t limit,
                                                      int block_ms) override {
    std::string from = "0-0";
    if (!after.empty()) {
      auto pos = parse_event_id(after);
      if (!pos)
        return caf::make_error(errc::invalid_argument, "'" + after + "' is not an event id");
      from = std::to_string(pos->first) + "-" + std::to_string(pos->second);
    }
    auto count = std::to_string(std::max<size_t>(limit, 1));
    if (block_ms <= 0) {
      auto r = client_.run({"XRANGE", key_, "(" + from, "+", "COUNT", count});
      if (!r)
        return std::move(r.error());
      return read_entries(r->get());
    }
    // Blocking reads on their own connection, whose command timeout covers
    // the block.
    if (!tail_) {
      auto opts = tail_opts_;
      opts.command_timeout = std::chrono::milliseconds(block_ms) + opts.command_timeout;
      tail_ = std::make_unique<redis::client>(std::move(opts));
    }
    auto r = tail_->run({"XREAD", "COUNT", count, "BLOCK", std::to_string(block_ms), "STREAMS",
                         key_, from});
    if (!r)
      return std::move(r.error());
    auto reply = r->get();
    if (reply->type == REDIS_REPLY_NIL)
      return std::vector<event_record>{};
    // [[key, [entries...]]]
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_ARRAY || reply->element[0]->elements != 2)
      return caf::make_error(errc::store_failure, "event log: unexpected reply to XREAD");
    return read_entries(reply->element[0]->element[1]);
  }

  caf::expected<int64_t> trim(millis before) override {
    auto r = client_.run({"XTRIM", key_, "MINID", "~", std::to_string(before)});
    if (!r)
      return std::move(r.error());
    return static_cast<int64_t>((*r)->integer);
  }

  caf::expected<std::string> last_id() override {
    auto r = client_.run({"XREVRANGE", key_, "+", "-", "COUNT", "1"});
    if (!r)
      return std::move(r.error());
    auto evs = read_entries(r->get());
    if (!evs)
      return std::move(evs.error());
    return evs->empty() ? std::string{} : evs->front().id;
  }

  bool shared() const override {
    return true;
  }

private:
  redis::client client_;
  redis::client_options tail_opts_;
  std::unique_ptr<redis::client> tail_;
  std::string key_;
};

} // namespace

caf::expected<std::unique_ptr<event_log>>
open_redis_event_log(const std::string& url, const std::string& key_prefix,
                     std::chrono::milliseconds connect_timeout,
                     std::chrono::milliseconds command_timeout) {
  auto co = redis::options_for(url, "event stream", "events", connect_timeout, command_timeout);
  if (!co)
    return std::move(co.error());
  auto tail = *co;
  return std::unique_ptr<event_log>{
    std::make_unique<redis_event_log>(std::move(*co), std::move(tail), key_prefix + "events")};
}

} // namespace hotswap
