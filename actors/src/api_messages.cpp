// The Messages API (api-v1.md, "Messages"): /api/messages and /api/v1/messages,
// any signed-in user. Handlers validate, check topic signatures and talk to
// the node's message broker (actors/messages.hpp); see docs/messages.md.

#include "api_internal.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/json_util.hpp"
#include "hotswap/actors/messages.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"

namespace hotswap::api_detail {

namespace {

/// The largest payload (its JSON text as the server serializes it).
constexpr size_t max_payload_bytes = 1048576;

constexpr size_t max_name_length = 200;   ///< topic and group names
constexpr size_t max_id_length = 128;     ///< message ids
constexpr size_t max_text_length = 256;   ///< schemaVersion, correlationId, partitionKey
constexpr size_t max_headers = 64;
constexpr size_t max_header_value = 4096;

/// How much of a request's deadline a long poll leaves for the answer.
constexpr auto long_poll_margin = std::chrono::milliseconds(1000);

constexpr const char* signature_header = "x-message-signature";

bool name_char(char c, bool colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
         || c == '_' || c == '-' || (colon && c == ':');
}

/// Topic and group names: [A-Za-z0-9._-]{1,200}.
bool valid_name(const std::string& s) {
  return !s.empty() && s.size() <= max_name_length
         && std::all_of(s.begin(), s.end(), [](char c) { return name_char(c, false); });
}

/// Message ids: [A-Za-z0-9._:-]{1,128} (UUIDs and most client ids).
bool valid_id(const std::string& s) {
  return !s.empty() && s.size() <= max_id_length
         && std::all_of(s.begin(), s.end(), [](char c) { return name_char(c, true); });
}

const char* name_rule = "must be 1 to 200 characters of A-Z, a-z, 0-9, '.', '_' and '-'.";

bool blank(const std::string& s) {
  return s.find_first_not_of(" \t\r\n") == std::string::npos;
}

/// "/api/v1/messages/" or "/api/messages/", as the client called it.
std::string prefix_of(const call_ptr& c) {
  return c->req().path.rfind("/api/v1/", 0) == 0 ? "/api/v1/messages/" : "/api/messages/";
}

bool broker_ready(bridge_ptr self, const call_ptr& c) {
  if (self->state.env.messages)
    return true;
  reply_problem(c, 503, "The message queue is not available on this node.");
  return false;
}

// -- JSON ---------------------------------------------------------------------------

json::value null_if_empty(const std::string& s) {
  if (s.empty())
    return nullptr;
  return json::value(s);
}

json::object message_json(const message_record& m) {
  json::object o;
  o["messageId"] = m.id;
  o["topicName"] = m.topic;
  boost::system::error_code ec;
  auto payload = json::parse(m.payload, ec);
  o["payload"] = ec ? json::value(m.payload) : std::move(payload);
  o["schemaVersion"] = m.schema_version;
  json::object headers;
  for (auto& [k, v] : m.headers)
    headers[k] = v;
  o["headers"] = std::move(headers);
  o["correlationId"] = null_if_empty(m.correlation_id);
  o["priority"] = m.priority;
  o["expiresAt"] = rfc3339_or_null(m.expires_at);
  o["partitionKey"] = null_if_empty(m.partition_key);
  o["timestamp"] = rfc3339_or_null(m.created_at);
  o["createdAt"] = rfc3339_or_null(m.created_at);
  o["status"] = to_name(static_cast<message_status>(m.status));
  o["acknowledgedAt"] = rfc3339_or_null(m.acknowledged_at);
  o["deliveryAttempts"] = m.delivery_attempts;
  return o;
}

std::string message_text(const message_record& m) {
  return json::serialize(message_json(m));
}

// -- publish --------------------------------------------------------------------------

/// Reads an optional string of at most `max_len` characters.
void read_text(const json::object& o, const char* key, std::string& out, field_errors& errs,
               size_t max_len = max_text_length) {
  if (read_string(o, key, out, errs) && out.size() > max_len)
    errs[key].push_back(std::string{"The "} + key + " field must be at most "
                        + std::to_string(max_len) + " characters.");
}

/// Reads the publish body into `m`; collects every violated rule in `errs`.
void read_message(const json::object& o, message_record& m, field_errors& errs) {
  // messageId: optional; empty -> a generated UUID.
  if (read_string(o, "messageId", m.id, errs) && !blank(m.id) && !valid_id(m.id))
    errs["messageId"].push_back(
      "The messageId must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'.");
  if (blank(m.id))
    m.id = crypto::uuid4();
  // topicName: required.
  if (read_string(o, "topicName", m.topic, errs, true) && !blank(m.topic)
      && !valid_name(m.topic))
    errs["topicName"].push_back(std::string{"The topicName "} + name_rule);
  // payload: required JSON, at most 1 MiB.
  auto payload = o.if_contains("payload");
  if (payload == nullptr || payload->is_null()) {
    errs["payload"].push_back("The payload field is required.");
  } else {
    m.payload = json::serialize(*payload);
    if (m.payload.size() > max_payload_bytes)
      errs["payload"].push_back("The payload must be at most 1048576 bytes of JSON (it has "
                                + std::to_string(m.payload.size()) + ").");
  }
  // schemaVersion: a non-empty string; "1.0" when absent.
  if (read_string(o, "schemaVersion", m.schema_version, errs)) {
    if (blank(m.schema_version))
      errs["schemaVersion"].push_back("The schemaVersion must not be empty.");
    else if (m.schema_version.size() > max_text_length)
      errs["schemaVersion"].push_back("The schemaVersion must be at most 256 characters.");
  } else if (o.if_contains("schemaVersion") == nullptr
             || o.if_contains("schemaVersion")->is_null()) {
    m.schema_version = "1.0";
  }
  // headers: an object of strings.
  if (auto h = o.if_contains("headers"); h != nullptr && !h->is_null()) {
    if (!h->is_object()) {
      errs["headers"].push_back("The headers must be an object of strings.");
    } else if (h->as_object().size() > max_headers) {
      errs["headers"].push_back("At most 64 headers are allowed.");
    } else {
      for (auto& kv : h->as_object()) {
        std::string key(kv.key());
        if (key.empty() || key.size() > max_text_length)
          errs["headers"].push_back("Header names must be 1 to 256 characters.");
        else if (!kv.value().is_string())
          errs["headers"].push_back("The header '" + key + "' must be a string.");
        else if (kv.value().as_string().size() > max_header_value)
          errs["headers"].push_back("The header '" + key + "' must be at most 4096 characters.");
        else
          m.headers[key] = std::string(kv.value().as_string());
      }
    }
  }
  read_text(o, "correlationId", m.correlation_id, errs);
  read_text(o, "partitionKey", m.partition_key, errs);
  // priority: an integer 0-9, 0 when absent.
  if (auto p = o.if_contains("priority"); p != nullptr && !p->is_null()) {
    int64_t v = -1;
    if (p->is_int64())
      v = p->as_int64();
    else if (p->is_uint64() && p->as_uint64() <= 9)
      v = static_cast<int64_t>(p->as_uint64());
    if (v < 0 || v > 9)
      errs["priority"].push_back("The priority must be an integer from 0 to 9.");
    else
      m.priority = static_cast<int32_t>(v);
  }
  // expiresAt: RFC 3339, in the future.
  std::string expires;
  if (read_string(o, "expiresAt", expires, errs) && !blank(expires)) {
    bool ok = false;
    m.expires_at = parse_rfc3339(expires, &ok);
    if (!ok)
      errs["expiresAt"].push_back("The expiresAt must be an RFC 3339 time.");
    else if (m.expires_at <= now_millis())
      errs["expiresAt"].push_back("The expiresAt must be in the future.");
  }
}

/// Topics with [messages.topics."<name>"] hmac_key_env: the request must
/// carry X-Message-Signature: sha256=<hex HMAC-SHA256 under the key> of the
/// raw request body, or — for a payload that is a JSON string, as the legacy
/// API's payloads were — of that string's value ("HMAC of the payload").
/// Returns the 401 reason, or "" when the request may go on.
std::string signature_problem(bridge_ptr self, const call_ptr& c, const std::string& topic,
                              const json::object& body) {
  auto& topics = self->state.env.cfg->messages.topics;
  auto t = topics.find(topic);
  if (t == topics.end())
    return {};
  auto key = std::getenv(t->second.hmac_key_env.c_str());
  auto header = c->req().header(signature_header);
  static constexpr std::string_view scheme = "sha256=";
  if (header.empty())
    return "Topic " + topic + " requires signed messages: send X-Message-Signature: "
                              "sha256=<hex HMAC-SHA256 of the request body>.";
  if (key == nullptr || *key == '\0' || header.size() <= scheme.size()
      || lower(header.substr(0, scheme.size())) != scheme)
    return "The X-Message-Signature of this message is not valid for topic " + topic + ".";
  auto given = crypto::hex_decode(header.substr(scheme.size()));
  if (!given)
    return "The X-Message-Signature of this message is not valid for topic " + topic + ".";
  auto signed_body = crypto::equal_ct(*given, crypto::hmac_sha256(key, c->req().body));
  auto signed_payload = false;
  if (auto p = body.if_contains("payload"); p && p->is_string())
    signed_payload = crypto::equal_ct(*given, crypto::hmac_sha256(key, std::string(p->as_string())));
  if (!signed_body && !signed_payload)
    return "The X-Message-Signature of this message is not valid for topic " + topic + ".";
  return {};
}

void post_publish(bridge_ptr self, const call_ptr& c) {
  if (!broker_ready(self, c))
    return;
  auto o = parse_object(c);
  if (!o)
    return;
  message_record m;
  field_errors errs;
  read_message(*o, m, errs);
  if (!errs.empty()) {
    reply_problem(c, 400, "The message is invalid.", errs);
    return;
  }
  if (auto why = signature_problem(self, c, m.topic, *o); !why.empty()) {
    reply_problem(c, 401, why);
    return;
  }
  m.published_by = c->who.username;
  m.tenant_id = c->who.tenant_id;
  auto location = prefix_of(c) + m.id;
  self->request(self->state.env.messages, timeout_of(self), put_atom::value, std::move(m))
    .then(
      [=](message_record& stored, bool created) {
        if (created)
          c->extra_headers.emplace_back("Location", location);
        reply_json(c, created ? 201 : 200, message_text(stored));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

// -- reads, acknowledge, delete -----------------------------------------------------------

void get_message(bridge_ptr self, const call_ptr& c) {
  if (!broker_ready(self, c))
    return;
  auto id = c->params[0];
  self->request(self->state.env.messages, timeout_of(self), get_atom::value, id)
    .then([=](message_record& m) { reply_json(c, 200, message_text(m)); },
          [=](caf::error& err) { reply_error(c, err); });
}

void get_topic_messages(bridge_ptr self, const call_ptr& c) {
  if (!broker_ready(self, c))
    return;
  auto topic = c->params[0];
  field_errors errs;
  if (!valid_name(topic))
    errs["topicName"].push_back(std::string{"The topicName "} + name_rule);
  uint32_t limit = 100;
  auto& query = c->req().query;
  if (auto i = query.find("limit"); i != query.end()) {
    try {
      size_t pos = 0;
      auto v = std::stol(i->second, &pos);
      if (pos != i->second.size() || v < 1 || v > 1000)
        throw std::out_of_range("limit");
      limit = static_cast<uint32_t>(v);
    } catch (const std::exception&) {
      errs["limit"].push_back("The limit must be an integer from 1 to 1000.");
    }
  }
  if (!errs.empty()) {
    reply_problem(c, 400, "Invalid topic or limit.", errs);
    return;
  }
  self->request(self->state.env.messages, timeout_of(self), list_atom::value, topic, limit)
    .then(
      [=](std::vector<message_record>& ms) {
        json::array arr;
        for (auto& m : ms)
          arr.emplace_back(message_json(m));
        reply_json(c, 200, json::serialize(arr));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void post_acknowledge(bridge_ptr self, const call_ptr& c) {
  if (!broker_ready(self, c))
    return;
  auto id = c->params[0];
  std::string group;
  if (!blank(c->req().body)) {
    auto o = parse_object(c);
    if (!o)
      return;
    field_errors errs;
    if (read_string(*o, "group", group, errs) && !blank(group) && !valid_name(group))
      errs["group"].push_back(std::string{"The group "} + name_rule);
    if (!errs.empty()) {
      reply_problem(c, 400, "Invalid acknowledgement.", errs);
      return;
    }
    if (blank(group))
      group.clear();
  }
  self->request(self->state.env.messages, timeout_of(self), ack_atom::value, id, group)
    .then([=](message_record& m) { reply_json(c, 200, message_text(m)); },
          [=](caf::error& err) { reply_error(c, err); });
}

void delete_message(bridge_ptr self, const call_ptr& c) {
  if (!broker_ready(self, c))
    return;
  self->request(self->state.env.messages, timeout_of(self), delete_atom::value, c->params[0])
    .then(
      [=](ok_atom) {
        http_response res;
        res.status = 204;
        res.content_type.clear();
        reply(c, std::move(res));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

// -- consume ----------------------------------------------------------------------------

/// Reads an optional integer in [lo, hi]; a present non-integer or a value
/// outside is a field error.
void read_bounded(const json::object& o, const char* key, int64_t lo, int64_t hi, uint32_t& out,
                  field_errors& errs) {
  auto v = o.if_contains(key);
  if (v == nullptr || v->is_null())
    return;
  int64_t x = lo - 1;
  if (v->is_int64())
    x = v->as_int64();
  else if (v->is_uint64() && v->as_uint64() <= static_cast<uint64_t>(hi))
    x = static_cast<int64_t>(v->as_uint64());
  if (x < lo || x > hi) {
    errs[key].push_back(std::string{"The "} + key + " must be an integer from "
                        + std::to_string(lo) + " to " + std::to_string(hi) + ".");
    return;
  }
  out = static_cast<uint32_t>(x);
}

void post_consume(bridge_ptr self, const call_ptr& c) {
  if (!broker_ready(self, c))
    return;
  auto topic = c->params[0];
  auto o = parse_object(c);
  if (!o)
    return;
  field_errors errs;
  if (!valid_name(topic))
    errs["topicName"].push_back(std::string{"The topicName "} + name_rule);
  std::string group;
  if (read_string(*o, "group", group, errs, true) && !blank(group) && !valid_name(group))
    errs["group"].push_back(std::string{"The group "} + name_rule);
  uint32_t max = 10;
  uint32_t wait_ms = 0;
  read_bounded(*o, "max", 1, 100, max, errs);
  read_bounded(*o, "waitMs", 0, max_consume_wait_ms, wait_ms, errs);
  if (!errs.empty()) {
    reply_problem(c, 400, "Invalid consume request.", errs);
    return;
  }
  // The answer must come before the bridge's request deadline.
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                c->deadline - std::chrono::steady_clock::now() - long_poll_margin)
                .count();
  wait_ms = static_cast<uint32_t>(std::clamp<int64_t>(left, 0, wait_ms));
  self->request(self->state.env.messages, timeout_of(self), consume_atom::value, topic, group,
                max, wait_ms)
    .then(
      [=](std::vector<message_record>& ms) {
        json::array arr;
        for (auto& m : ms)
          arr.emplace_back(message_json(m));
        reply_json(c, 200, json::serialize(arr));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

} // namespace

void add_message_routes(const route_adder& add) {
  // Any signed-in user (rank 0 with authentication, like /authentication/me).
  for (std::string p : {"/api/messages", "/api/v1/messages"}) {
    add("POST", p + "/publish", post_publish, true, 0, false, {});
    add("GET", p + "/topic/{}", get_topic_messages, true, 0, false, {});
    add("POST", p + "/topics/{}/consume", post_consume, true, 0, false, {});
    add("GET", p + "/{}", get_message, true, 0, false, {});
    add("POST", p + "/{}/acknowledge", post_acknowledge, true, 0, false, {});
    add("DELETE", p + "/{}", delete_message, true, 0, false, {});
  }
}

} // namespace hotswap::api_detail
