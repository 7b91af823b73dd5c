#include "hotswap/actors/deployment_state.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>
#include <set>

#include <boost/json.hpp>

#include "hotswap/actors/json_util.hpp"
#include "hotswap/actors/module_catalog.hpp"
#include "hotswap/config/config.hpp"

namespace hotswap::deploy {

namespace json = boost::json;

namespace {

std::string lower_ascii(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// Number of UTF-8 code points (continuation bytes not counted).
size_t utf8_length(const std::string& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

/// A JSON integer (int64 or uint64) as int64; false for any other kind or
/// for a uint64 beyond int64.
bool json_integer(const json::value& v, int64_t& out) {
  if (v.is_int64()) {
    out = v.as_int64();
    return true;
  }
  if (v.is_uint64() && v.as_uint64() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    out = static_cast<int64_t>(v.as_uint64());
    return true;
  }
  return false;
}

const char* kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "unknown";
}

// -- request parsing ---------------------------------------------------------------

/// The string at `key` when present and a string; reports "required" or
/// "must be a string" otherwise (null counts as absent).
bool required_string(const json::object& o, const char* key, std::string& out,
                     field_errors& errors) {
  auto v = o.if_contains(key);
  if (!v || v->is_null()) {
    errors[key].push_back(std::string("The ") + key + " field is required.");
    return false;
  }
  if (!v->is_string()) {
    errors[key].push_back(std::string("The ") + key + " field must be a string, not "
                          + kind_name(*v) + ".");
    return false;
  }
  out = std::string(v->as_string());
  return true;
}

/// A uint32 canary field: JSON integer within [0, 2^32).
void canary_uint(const json::object& c, const char* key, uint32_t& out, bool& has,
                 field_errors& errors) {
  auto v = c.if_contains(key);
  if (!v || v->is_null())
    return;
  auto field = std::string("canary.") + key;
  int64_t i = 0;
  if (!json_integer(*v, i)) {
    errors[field].push_back("Must be an integer, not " + std::string(kind_name(*v)) + ".");
    return;
  }
  if (i < 0 || i > std::numeric_limits<uint32_t>::max()) {
    errors[field].push_back("Out of range.");
    return;
  }
  out = static_cast<uint32_t>(i);
  has = true;
}

void parse_canary(const json::value& v, deployment_request& req, field_errors& errors) {
  if (!v.is_object()) {
    errors["canary"].push_back("The canary field must be an object, not "
                               + std::string(kind_name(v)) + ".");
    return;
  }
  auto& c = v.as_object();
  req.has_canary = true;
  if (auto s = c.if_contains("steps"); s && !s->is_null()) {
    if (!s->is_array()) {
      errors["canary.steps"].push_back("Must be an array of integers.");
    } else {
      std::vector<uint32_t> steps;
      bool ok = true;
      for (auto& e : s->as_array()) {
        int64_t i = 0;
        if (!json_integer(e, i) || i < 0 || i > std::numeric_limits<uint32_t>::max()) {
          ok = false;
          break;
        }
        steps.push_back(static_cast<uint32_t>(i));
      }
      if (!ok) {
        errors["canary.steps"].push_back("Must be an array of integers.");
      } else {
        req.canary.steps = std::move(steps);
        req.canary_has_steps = true;
      }
    }
  }
  canary_uint(c, "stepDurationSeconds", req.canary.step_seconds, req.canary_has_step_seconds,
              errors);
  canary_uint(c, "maxErrorRateIncreasePercent", req.canary.max_error_rate_increase_percent,
              req.canary_has_error, errors);
  canary_uint(c, "maxLatencyIncreasePercent", req.canary.max_latency_increase_percent,
              req.canary_has_latency, errors);
  canary_uint(c, "minSamples", req.canary.min_samples, req.canary_has_min_samples, errors);
}

void parse_environment(const json::object& o, deployment_request& req, field_errors& errors) {
  static const char* key = "targetEnvironment";
  const auto& names = config::environment_names();
  auto message = [&] {
    std::string m = "The targetEnvironment must be one of ";
    for (size_t i = 0; i < names.size(); ++i)
      m += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
    m += " (case-insensitive) or a JSON number 0-" + std::to_string(names.size() - 1) + ".";
    return m;
  };
  auto v = o.if_contains(key);
  if (!v || v->is_null()) {
    errors[key].push_back("The targetEnvironment field is required.");
    return;
  }
  if (v->is_string()) {
    auto l = lower_ascii(std::string(v->as_string()));
    for (auto& n : names)
      if (lower_ascii(n) == l) {
        req.environment = n;
        return;
      }
    errors[key].push_back(message());
    return;
  }
  int64_t i = 0;
  if (json_integer(*v, i) && i >= 0 && i < static_cast<int64_t>(names.size())) {
    req.environment = names[static_cast<size_t>(i)];
    return;
  }
  errors[key].push_back(message());
}

void parse_strategy_field(const json::object& o, deployment_request& req,
                          field_errors& errors) {
  auto v = o.if_contains("strategy");
  if (!v || v->is_null())
    return;
  static const char* msg =
    "The strategy must be Direct, Rolling, BlueGreen or Canary (case-insensitive) or a JSON "
    "number 0-3.";
  if (v->is_string()) {
    std::string text(v->as_string());
    // Names only: numeric strings are not legacy integers (as for environments).
    bool numeric = !text.empty()
                   && std::all_of(text.begin(), text.end(),
                                  [](unsigned char c) { return std::isdigit(c) != 0; });
    strategy_kind k{};
    if (!numeric && parse_strategy(text, k)) {
      req.has_strategy = true;
      req.strategy = k;
      return;
    }
    errors["strategy"].push_back(msg);
    return;
  }
  int64_t i = 0;
  if (json_integer(*v, i) && i >= 0 && i <= 3) {
    req.has_strategy = true;
    req.strategy = static_cast<strategy_kind>(i);
    return;
  }
  errors["strategy"].push_back(msg);
}

void parse_metadata(const json::object& o, deployment_request& req, field_errors& errors) {
  auto v = o.if_contains("metadata");
  if (!v || v->is_null())
    return;
  if (!v->is_object()) {
    errors["metadata"].push_back("The metadata must be an object of strings.");
    return;
  }
  auto& md = v->as_object();
  if (md.size() > 50)
    errors["metadata"].push_back("At most 50 metadata entries are allowed.");
  bool bad_key = false;
  bool bad_value = false;
  bool bad_type = false;
  for (auto& kv : md) {
    std::string k(kv.key());
    auto klen = utf8_length(k);
    if (klen < 1 || klen > 100)
      bad_key = true;
    if (!kv.value().is_string()) {
      bad_type = true;
      continue;
    }
    std::string val(kv.value().as_string());
    if (utf8_length(val) > 500)
      bad_value = true;
    req.metadata[k] = std::move(val);
  }
  if (bad_key)
    errors["metadata"].push_back("Metadata keys must be 1 to 100 characters.");
  if (bad_value)
    errors["metadata"].push_back("Metadata values must be at most 500 characters.");
  if (bad_type)
    errors["metadata"].push_back("Metadata values must be strings.");
}

// -- plan helpers ------------------------------------------------------------------

std::string join_nodes(const std::vector<std::string>& nodes) {
  if (nodes.empty())
    return "no nodes";
  std::string out = nodes.size() == 1 ? "node " : "nodes ";
  const size_t shown = 5;
  for (size_t i = 0; i < nodes.size() && i < shown; ++i)
    out += (i == 0 ? "" : ", ") + nodes[i];
  if (nodes.size() > shown)
    out += " and " + std::to_string(nodes.size() - shown) + " more";
  return out;
}

step make_stage(const std::string& module, const std::string& version,
                const std::vector<std::string>& nodes, bool at_zero) {
  step s;
  s.kind = step_kind::stage;
  s.nodes = nodes;
  s.version = version;
  s.label = "stage " + module + " " + version + (at_zero ? " at 0%" : "") + " on "
            + join_nodes(nodes);
  return s;
}

step make_switch(const std::string& module, const std::string& version,
                 const std::string& previous, const std::vector<std::string>& nodes) {
  step s;
  s.kind = step_kind::weights;
  s.nodes = nodes;
  s.version = version;
  s.weights[version] = 100;
  if (!previous.empty() && previous != version)
    s.weights[previous] = 0;
  s.percent = 100;
  s.label = "switch 100% of " + module + " to " + version + " on " + join_nodes(nodes);
  return s;
}

step make_verify(const std::string& module, const std::string& version,
                 const std::vector<std::string>& nodes) {
  step s;
  s.kind = step_kind::verify;
  s.nodes = nodes;
  s.version = version;
  s.label = "verify " + module + " " + version + " through the normal route on "
            + join_nodes(nodes);
  return s;
}

step make_smoke(const std::string& module, const std::string& version,
                const std::vector<std::string>& nodes) {
  step s;
  s.kind = step_kind::smoke;
  s.nodes = nodes;
  s.version = version;
  s.label = "smoke-test " + module + " " + version + " on " + join_nodes(nodes);
  return s;
}

step make_retire(const std::string& module, const std::string& version,
                 const std::vector<std::string>& nodes) {
  step s;
  s.kind = step_kind::retire;
  s.nodes = nodes;
  s.version = version;
  s.label = "retire " + module + " " + version + " on " + join_nodes(nodes);
  return s;
}

// -- JSON of the record ------------------------------------------------------------

json::value string_or_null(const std::string& s) {
  if (s.empty())
    return nullptr;
  return json::value(s);
}

json::value duration_or_null(millis start, millis end) {
  if (start == 0 || end == 0)
    return nullptr;
  return json::value(iso_duration(end - start));
}

json::object metadata_json(const std::map<std::string, std::string>& md) {
  json::object o;
  for (auto& [k, v] : md)
    o[k] = v;
  return o;
}

json::array nodes_json(const std::vector<std::string>& nodes) {
  json::array a;
  for (auto& n : nodes)
    a.emplace_back(n);
  return a;
}

json::object canary_json(const canary_settings& c) {
  json::object o;
  json::array steps;
  for (auto p : c.steps)
    steps.emplace_back(p);
  o["steps"] = std::move(steps);
  o["stepSeconds"] = c.step_seconds;
  o["maxErrorRateIncreasePercent"] = c.max_error_rate_increase_percent;
  o["maxLatencyIncreasePercent"] = c.max_latency_increase_percent;
  o["minSamples"] = c.min_samples;
  o["inconclusive"] = c.inconclusive;
  return o;
}

json::object step_json(const step& s) {
  json::object o;
  o["kind"] = to_string(s.kind);
  o["nodes"] = nodes_json(s.nodes);
  o["version"] = s.version;
  o["baseline"] = s.baseline;
  json::object w;
  for (auto& [v, x] : s.weights)
    w[v] = x;
  o["weights"] = std::move(w);
  o["holdSeconds"] = s.hold_seconds;
  o["percent"] = s.percent;
  o["label"] = s.label;
  return o;
}

json::array steps_json(const std::vector<step>& steps) {
  json::array a;
  for (auto& s : steps)
    a.emplace_back(step_json(s));
  return a;
}

json::object plan_input_json(const plan_input& in) {
  json::object o;
  o["strategy"] = to_string(in.strategy);
  o["module"] = in.module;
  o["version"] = in.version;
  o["previous"] = in.previous;
  o["nodes"] = nodes_json(in.nodes);
  o["batchSize"] = in.batch_size;
  o["keepSeconds"] = in.keep_seconds;
  o["canary"] = canary_json(in.canary);
  return o;
}

json::object stage_json(const stage_view& s) {
  json::object o;
  o["name"] = s.name;
  o["status"] = s.status;
  o["start"] = s.start;
  o["end"] = s.end;
  o["strategy"] = s.strategy;
  o["nodesDeployed"] = s.nodes_deployed;
  o["nodesFailed"] = s.nodes_failed;
  o["message"] = s.message;
  o["progress"] = s.progress;
  return o;
}

/// Field readers for from_json: absent (or null) keeps the default; a
/// present value of the wrong kind clears `ok`.
struct reader {
  const json::object& o;
  bool ok = true;

  const json::value* find(const char* key) {
    auto v = o.if_contains(key);
    return v && !v->is_null() ? v : nullptr;
  }

  void str(const char* key, std::string& out) {
    if (auto v = find(key)) {
      if (v->is_string())
        out = std::string(v->as_string());
      else
        ok = false;
    }
  }

  void boolean(const char* key, bool& out) {
    if (auto v = find(key)) {
      if (v->is_bool())
        out = v->as_bool();
      else
        ok = false;
    }
  }

  template <class Int>
  void integer(const char* key, Int& out) {
    if (auto v = find(key)) {
      int64_t i = 0;
      if (json_integer(*v, i) && i >= static_cast<int64_t>(std::numeric_limits<Int>::min())
          && (i <= 0
              || static_cast<uint64_t>(i)
                   <= static_cast<uint64_t>(std::numeric_limits<Int>::max())))
        out = static_cast<Int>(i);
      else
        ok = false;
    }
  }

  void strings(const char* key, std::vector<std::string>& out) {
    if (auto v = find(key)) {
      if (!v->is_array()) {
        ok = false;
        return;
      }
      out.clear();
      for (auto& e : v->as_array()) {
        if (!e.is_string()) {
          ok = false;
          return;
        }
        out.emplace_back(e.as_string());
      }
    }
  }

  void string_map(const char* key, std::map<std::string, std::string>& out) {
    if (auto v = find(key)) {
      if (!v->is_object()) {
        ok = false;
        return;
      }
      out.clear();
      for (auto& kv : v->as_object()) {
        if (!kv.value().is_string()) {
          ok = false;
          return;
        }
        out[std::string(kv.key())] = std::string(kv.value().as_string());
      }
    }
  }

  void strategy(const char* key, strategy_kind& out) {
    std::string text;
    str(key, text);
    if (!text.empty() && !parse_strategy(text, out))
      ok = false;
  }

  const json::object* object(const char* key) {
    if (auto v = find(key)) {
      if (v->is_object())
        return &v->as_object();
      ok = false;
    }
    return nullptr;
  }

  const json::array* array(const char* key) {
    if (auto v = find(key)) {
      if (v->is_array())
        return &v->as_array();
      ok = false;
    }
    return nullptr;
  }
};

bool parse_step_kind(const std::string& text, step_kind& out) {
  for (int32_t i = 0; i <= 6; ++i) {
    auto k = static_cast<step_kind>(i);
    if (to_string(k) == text) {
      out = k;
      return true;
    }
  }
  return false;
}

bool read_canary(const json::object& o, canary_settings& c) {
  reader r{o};
  if (auto a = r.array("steps")) {
    c.steps.clear();
    for (auto& e : *a) {
      int64_t i = 0;
      if (!json_integer(e, i) || i < 0 || i > std::numeric_limits<uint32_t>::max())
        return false;
      c.steps.push_back(static_cast<uint32_t>(i));
    }
  }
  r.integer("stepSeconds", c.step_seconds);
  r.integer("maxErrorRateIncreasePercent", c.max_error_rate_increase_percent);
  r.integer("maxLatencyIncreasePercent", c.max_latency_increase_percent);
  r.integer("minSamples", c.min_samples);
  r.str("inconclusive", c.inconclusive);
  return r.ok;
}

bool read_step(const json::value& v, step& s) {
  if (!v.is_object())
    return false;
  reader r{v.as_object()};
  std::string kind;
  r.str("kind", kind);
  if (!parse_step_kind(kind, s.kind))
    return false;
  r.strings("nodes", s.nodes);
  r.str("version", s.version);
  r.str("baseline", s.baseline);
  if (auto w = r.object("weights")) {
    for (auto& kv : *w) {
      int64_t i = 0;
      if (!json_integer(kv.value(), i) || i < 0 || i > std::numeric_limits<uint32_t>::max())
        return false;
      s.weights[std::string(kv.key())] = static_cast<uint32_t>(i);
    }
  }
  r.integer("holdSeconds", s.hold_seconds);
  r.integer("percent", s.percent);
  r.str("label", s.label);
  return r.ok;
}

bool read_steps(const json::array* a, std::vector<step>& out) {
  out.clear();
  if (!a)
    return true;
  for (auto& e : *a) {
    step s;
    if (!read_step(e, s))
      return false;
    out.push_back(std::move(s));
  }
  return true;
}

bool read_plan_input(const json::object& o, plan_input& in) {
  reader r{o};
  r.strategy("strategy", in.strategy);
  r.str("module", in.module);
  r.str("version", in.version);
  r.str("previous", in.previous);
  r.strings("nodes", in.nodes);
  r.integer("batchSize", in.batch_size);
  r.integer("keepSeconds", in.keep_seconds);
  if (auto c = r.object("canary"); c && !read_canary(*c, in.canary))
    return false;
  return r.ok;
}

bool read_stage(const json::value& v, stage_view& s) {
  if (!v.is_object())
    return false;
  reader r{v.as_object()};
  r.str("name", s.name);
  r.str("status", s.status);
  r.integer("start", s.start);
  r.integer("end", s.end);
  r.str("strategy", s.strategy);
  r.integer("nodesDeployed", s.nodes_deployed);
  r.integer("nodesFailed", s.nodes_failed);
  r.str("message", s.message);
  r.integer("progress", s.progress);
  return r.ok;
}

} // namespace

// -- strategies -------------------------------------------------------------------

std::string to_string(strategy_kind s) {
  switch (s) {
    case strategy_kind::direct: return "Direct";
    case strategy_kind::rolling: return "Rolling";
    case strategy_kind::blue_green: return "BlueGreen";
    case strategy_kind::canary: return "Canary";
  }
  return "Unknown";
}

bool parse_strategy(const std::string& text, strategy_kind& out) {
  auto l = lower_ascii(text);
  if (l == "direct" || l == "0")
    out = strategy_kind::direct;
  else if (l == "rolling" || l == "1")
    out = strategy_kind::rolling;
  else if (l == "bluegreen" || l == "blue-green" || l == "2")
    out = strategy_kind::blue_green;
  else if (l == "canary" || l == "3")
    out = strategy_kind::canary;
  else
    return false;
  return true;
}

// -- the request ---------------------------------------------------------------------

deployment_request parse_request(const std::string& json_body, field_errors& errors) {
  deployment_request req;
  json::value doc;
  {
    boost::system::error_code ec;
    doc = json::parse(json_body, ec);
    if (ec) {
      errors["body"].push_back("The body must be a JSON object: " + ec.message() + ".");
      return req;
    }
  }
  if (!doc.is_object()) {
    errors["body"].push_back("The body must be a JSON object, not " + std::string(kind_name(doc))
                             + ".");
    return req;
  }
  auto& o = doc.as_object();
  if (required_string(o, "moduleName", req.module_name, errors)
      && !valid_module_name(req.module_name))
    errors["moduleName"].push_back(
      "The moduleName must be 3 to 64 lower-case letters, digits or hyphens, not starting or "
      "ending with a hyphen.");
  if (required_string(o, "version", req.version, errors) && !valid_semver(req.version))
    errors["version"].push_back("The version must be SemVer MAJOR.MINOR.PATCH[-pre].");
  parse_environment(o, req, errors);
  if (required_string(o, "requesterEmail", req.requester_email, errors)
      && !valid_email(req.requester_email))
    errors["requesterEmail"].push_back("A valid e-mail address is required.");
  if (auto v = o.if_contains("description"); v && !v->is_null()) {
    if (!v->is_string())
      errors["description"].push_back("The description must be a string.");
    else {
      req.description = std::string(v->as_string());
      if (utf8_length(req.description) > 1000)
        errors["description"].push_back("The description must be at most 1000 characters.");
    }
  }
  parse_metadata(o, req, errors);
  if (auto v = o.if_contains("requireApproval"); v && !v->is_null()) {
    if (v->is_bool())
      req.require_approval = v->as_bool();
    else
      errors["requireApproval"].push_back("The requireApproval field must be a boolean.");
  }
  parse_strategy_field(o, req, errors);
  if (auto v = o.if_contains("canary"); v && !v->is_null())
    parse_canary(*v, req, errors);
  return req;
}

canary_settings effective_canary(const canary_settings& env_defaults,
                                 const deployment_request& req, field_errors& errors) {
  canary_settings out = env_defaults;
  if (req.canary_has_steps) {
    const auto& st = req.canary.steps;
    bool ok = !st.empty() && st.back() == 100;
    for (size_t i = 0; ok && i < st.size(); ++i)
      ok = st[i] >= 1 && st[i] <= 100 && (i == 0 || st[i] > st[i - 1]);
    if (ok)
      out.steps = st;
    else
      errors["canary.steps"].push_back(
        "The steps must be strictly increasing percentages between 1 and 100, ending at 100.");
  }
  auto bounded = [&](bool has, uint32_t value, uint32_t lo, uint32_t hi, const char* field,
                     uint32_t& target) {
    if (!has)
      return;
    if (value >= lo && value <= hi)
      target = value;
    else
      errors[std::string("canary.") + field].push_back(
        "Must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ".");
  };
  bounded(req.canary_has_step_seconds, req.canary.step_seconds, 1, 3600, "stepDurationSeconds",
          out.step_seconds);
  bounded(req.canary_has_error, req.canary.max_error_rate_increase_percent, 1, 1000,
          "maxErrorRateIncreasePercent", out.max_error_rate_increase_percent);
  bounded(req.canary_has_latency, req.canary.max_latency_increase_percent, 1, 1000,
          "maxLatencyIncreasePercent", out.max_latency_increase_percent);
  bounded(req.canary_has_min_samples, req.canary.min_samples, 1, 100000, "minSamples",
          out.min_samples);
  return out;
}

// -- plans -----------------------------------------------------------------------------

std::string to_string(step_kind k) {
  switch (k) {
    case step_kind::stage: return "stage";
    case step_kind::weights: return "weights";
    case step_kind::retire: return "retire";
    case step_kind::smoke: return "smoke";
    case step_kind::analyze: return "analyze";
    case step_kind::hold: return "hold";
    case step_kind::verify: return "verify";
  }
  return "unknown";
}

std::vector<step> build_plan(const plan_input& in) {
  std::vector<step> plan;
  if (in.nodes.empty())
    return plan;
  const auto& all = in.nodes;
  const auto& v = in.version;
  // Redeploy of the live version: make sure it is loaded and carries all traffic.
  if (!in.previous.empty() && in.previous == v) {
    plan.push_back(make_stage(in.module, v, all, false));
    plan.push_back(make_switch(in.module, v, {}, all));
    plan.push_back(make_verify(in.module, v, all));
    return plan;
  }
  const bool has_prev = !in.previous.empty();
  const auto& prev = in.previous;
  switch (in.strategy) {
    case strategy_kind::direct:
      plan.push_back(make_stage(in.module, v, all, false));
      plan.push_back(make_switch(in.module, v, prev, all));
      plan.push_back(make_verify(in.module, v, all));
      break;
    case strategy_kind::rolling: {
      size_t batch = std::max<size_t>(1, in.batch_size);
      size_t batches = (all.size() + batch - 1) / batch;
      for (size_t b = 0; b < batches; ++b) {
        std::vector<std::string> nodes(all.begin() + static_cast<std::ptrdiff_t>(b * batch),
                                       all.begin()
                                         + static_cast<std::ptrdiff_t>(
                                           std::min(all.size(), (b + 1) * batch)));
        auto suffix = " (batch " + std::to_string(b + 1) + "/" + std::to_string(batches) + ")";
        plan.push_back(make_stage(in.module, v, nodes, false));
        plan.back().label += suffix;
        plan.push_back(make_switch(in.module, v, prev, nodes));
        plan.back().label += suffix;
        plan.push_back(make_verify(in.module, v, nodes));
        plan.back().label += suffix;
      }
      break;
    }
    case strategy_kind::blue_green:
    case strategy_kind::canary:
      if (!has_prev) {
        plan.push_back(make_stage(in.module, v, all, false));
        plan.push_back(make_smoke(in.module, v, all));
        plan.push_back(make_switch(in.module, v, prev, all));
        plan.push_back(make_verify(in.module, v, all));
        break;
      }
      plan.push_back(make_stage(in.module, v, all, true));
      if (in.strategy == strategy_kind::blue_green) {
        plan.push_back(make_smoke(in.module, v, all));
        plan.push_back(make_switch(in.module, v, prev, all));
        plan.push_back(make_verify(in.module, v, all));
        step h;
        h.kind = step_kind::hold;
        h.nodes = all;
        h.version = prev;
        h.hold_seconds = in.keep_seconds;
        h.label = "keep " + in.module + " " + prev + " (blue) loaded for "
                  + std::to_string(in.keep_seconds) + " s on " + join_nodes(all);
        plan.push_back(std::move(h));
      } else {
        for (auto p : in.canary.steps) {
          if (p >= 100)
            continue;
          step w;
          w.kind = step_kind::weights;
          w.nodes = all;
          w.version = v;
          w.weights[v] = p;
          w.weights[prev] = 100 - p;
          w.percent = p;
          w.label = "shift " + std::to_string(p) + "% of " + in.module + " to " + v + " ("
                    + std::to_string(100 - p) + "% stays on " + prev + ") on "
                    + join_nodes(all);
          plan.push_back(std::move(w));
          step a;
          a.kind = step_kind::analyze;
          a.nodes = all;
          a.version = v;
          a.baseline = prev;
          a.hold_seconds = in.canary.step_seconds;
          a.percent = p;
          a.label = "analyze " + v + " at " + std::to_string(p) + "% against " + prev + " for "
                    + std::to_string(in.canary.step_seconds) + " s";
          plan.push_back(std::move(a));
        }
        plan.push_back(make_switch(in.module, v, prev, all));
        plan.push_back(make_verify(in.module, v, all));
      }
      break;
  }
  if (has_prev)
    plan.push_back(make_retire(in.module, prev, all));
  return plan;
}

std::vector<step> build_rollback(const plan_input& in, const std::vector<step>& plan,
                                 size_t applied) {
  std::vector<step> out;
  applied = std::min(applied, plan.size());
  if (applied == 0)
    return out;
  std::set<std::string> touched_set;
  bool previous_retired = false;
  for (size_t i = 0; i < applied; ++i) {
    touched_set.insert(plan[i].nodes.begin(), plan[i].nodes.end());
    if (plan[i].kind == step_kind::retire && !in.previous.empty()
        && plan[i].version == in.previous)
      previous_retired = true;
  }
  if (touched_set.empty())
    return out;
  std::vector<std::string> touched(touched_set.begin(), touched_set.end());
  const auto& v = in.version;
  const auto& prev = in.previous;
  if (!prev.empty() && prev == v) {
    // A redeploy of the live version: restore it at 100 %, never unload it.
    out.push_back(make_stage(in.module, v, touched, false));
    out.back().label = "rollback: " + out.back().label;
    out.push_back(make_switch(in.module, v, {}, touched));
    out.back().label = "rollback: " + out.back().label;
    return out;
  }
  if (!prev.empty()) {
    if (previous_retired) {
      out.push_back(make_stage(in.module, prev, touched, false));
      out.back().label = "rollback: re-" + out.back().label;
    }
    step w;
    w.kind = step_kind::weights;
    w.nodes = touched;
    w.version = prev;
    w.weights[prev] = 100;
    w.weights[v] = 0;
    w.percent = 100;
    w.label = "rollback: restore 100% of " + in.module + " to " + prev + " on "
              + join_nodes(touched);
    out.push_back(std::move(w));
  }
  out.push_back(make_retire(in.module, v, touched));
  out.back().label = "rollback: " + out.back().label;
  return out;
}

// -- canary analysis ---------------------------------------------------------------------

analysis analyze(const version_sample& baseline, const version_sample& canary,
                 const canary_settings& s, uint32_t windows_elapsed) {
  const uint32_t max_windows = s.inconclusive == "extend" ? 4 : 1;
  const uint64_t min_samples = s.min_samples;
  if (canary.invocations < min_samples || canary.invocations == 0) {
    auto counts = std::to_string(canary.invocations) + " of " + std::to_string(min_samples)
                  + " canary invocations";
    if (windows_elapsed < max_windows)
      return {verdict::wait, "waiting for samples: " + counts};
    return {verdict::fail, "inconclusive: only " + counts + " after "
                             + std::to_string(windows_elapsed) + " analysis window(s)"};
  }
  auto rate = [](const version_sample& x) {
    return x.invocations == 0
             ? 0.0
             : 100.0 * static_cast<double>(x.errors) / static_cast<double>(x.invocations);
  };
  auto fmt = [](double d) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f", d);
    return std::string(buf);
  };
  const double canary_rate = rate(canary);
  const double baseline_rate = rate(baseline);
  const double rate_limit =
    baseline_rate * (1.0 + s.max_error_rate_increase_percent / 100.0) + 1.0;
  if (canary_rate > rate_limit)
    return {verdict::fail, "error rate " + fmt(canary_rate) + "% exceeds " + fmt(rate_limit)
                             + "% (baseline " + fmt(baseline_rate) + "%)"};
  if (baseline.invocations >= min_samples && baseline.invocations > 0) {
    const double p95_limit =
      baseline.p95_ms * (1.0 + s.max_latency_increase_percent / 100.0) + 1.0;
    if (canary.p95_ms > p95_limit)
      return {verdict::fail, "p95 latency " + fmt(canary.p95_ms) + " ms exceeds "
                               + fmt(p95_limit) + " ms (baseline " + fmt(baseline.p95_ms)
                               + " ms)"};
  }
  if (windows_elapsed == 0)
    return {verdict::wait, "within thresholds, analysis window not yet elapsed"};
  return {verdict::pass, "error rate " + fmt(canary_rate) + "% and p95 " + fmt(canary.p95_ms)
                           + " ms within thresholds"};
}

// -- the record -----------------------------------------------------------------------------

std::vector<stage_view> initial_stages(const std::string& environment, bool needs_approval,
                                       strategy_kind s) {
  auto pending = [](std::string name) {
    stage_view v;
    v.name = std::move(name);
    return v;
  };
  std::vector<stage_view> out;
  if (needs_approval)
    out.push_back(pending("Approval"));
  out.push_back(pending("Security Scan"));
  out.push_back(pending("Deploy to " + environment));
  out.back().strategy = to_string(s);
  out.push_back(pending("Validation"));
  return out;
}

bool is_terminal(const std::string& status) {
  return status == "Succeeded" || status == "Failed" || status == "RolledBack"
         || status == "Cancelled";
}

std::string to_view_json(const deployment& d) {
  json::object o;
  o["executionId"] = d.execution_id;
  o["moduleName"] = d.module_name;
  o["version"] = d.version;
  o["targetEnvironment"] = d.environment;
  o["strategy"] = to_string(d.strategy);
  o["status"] = d.status;
  o["startTime"] = rfc3339_or_null(d.start);
  o["endTime"] = rfc3339_or_null(d.end);
  o["duration"] = duration_or_null(d.start, d.end);
  o["requesterEmail"] = d.requester_email;
  json::array stages;
  for (auto& s : d.stages) {
    json::object so;
    so["name"] = s.name;
    so["status"] = s.status;
    so["startTime"] = rfc3339_or_null(s.start);
    so["endTime"] = rfc3339_or_null(s.end);
    so["duration"] = duration_or_null(s.start, s.end);
    so["strategy"] = string_or_null(s.strategy);
    so["nodesDeployed"] = s.nodes_deployed;
    so["nodesFailed"] = s.nodes_failed;
    so["message"] = string_or_null(s.message);
    so["progress"] = s.progress;
    stages.emplace_back(std::move(so));
  }
  o["stages"] = std::move(stages);
  o["traceId"] = d.trace_id;
  o["description"] = d.description;
  o["metadata"] = metadata_json(d.metadata);
  o["requireApproval"] = d.needs_approval;
  o["requestedBy"] = string_or_null(d.requested_by);
  o["message"] = string_or_null(d.message);
  o["rollbackId"] = string_or_null(d.rollback_id);
  o["stepsCompleted"] = d.cursor;
  o["stepsTotal"] = d.plan.size();
  return json::serialize(o);
}

std::string to_list_json(const deployment& d) {
  json::object o;
  o["executionId"] = d.execution_id;
  o["moduleName"] = d.module_name;
  o["version"] = d.version;
  o["targetEnvironment"] = d.environment;
  o["status"] = d.status;
  o["startTime"] = rfc3339_or_null(d.start);
  o["duration"] = duration_or_null(d.start, d.end);
  return json::serialize(o);
}

std::string to_json(const deployment& d) {
  json::object o;
  o["executionId"] = d.execution_id;
  o["moduleName"] = d.module_name;
  o["version"] = d.version;
  o["environment"] = d.environment;
  o["strategy"] = to_string(d.strategy);
  o["status"] = d.status;
  o["start"] = d.start;
  o["end"] = d.end;
  o["requesterEmail"] = d.requester_email;
  o["requestedBy"] = d.requested_by;
  o["requestedById"] = d.requested_by_id;
  o["tenantId"] = d.tenant_id;
  o["description"] = d.description;
  o["metadata"] = metadata_json(d.metadata);
  o["traceId"] = d.trace_id;
  o["idempotencyKey"] = d.idempotency_key;
  o["needsApproval"] = d.needs_approval;
  o["canary"] = canary_json(d.canary);
  o["input"] = plan_input_json(d.input);
  o["plan"] = steps_json(d.plan);
  o["cursor"] = d.cursor;
  o["stepStarted"] = d.step_started;
  o["stepStartedAt"] = d.step_started_at;
  o["rollback"] = steps_json(d.rollback);
  o["rollbackCursor"] = d.rollback_cursor;
  o["rollbackStarted"] = d.rollback_started;
  o["rollbackReason"] = d.rollback_reason;
  o["rollbackOutcome"] = d.rollback_outcome;
  o["rollbackId"] = d.rollback_id;
  json::array stages;
  for (auto& s : d.stages)
    stages.emplace_back(stage_json(s));
  o["stages"] = std::move(stages);
  o["message"] = d.message;
  o["quotaReserved"] = d.quota_reserved;
  return json::serialize(o);
}

bool from_json(const std::string& text, deployment& out) {
  boost::system::error_code ec;
  auto doc = json::parse(text, ec);
  if (ec || !doc.is_object())
    return false;
  deployment d;
  reader r{doc.as_object()};
  r.str("executionId", d.execution_id);
  r.str("moduleName", d.module_name);
  r.str("version", d.version);
  r.str("environment", d.environment);
  r.strategy("strategy", d.strategy);
  r.str("status", d.status);
  r.integer("start", d.start);
  r.integer("end", d.end);
  r.str("requesterEmail", d.requester_email);
  r.str("requestedBy", d.requested_by);
  r.str("requestedById", d.requested_by_id);
  r.str("tenantId", d.tenant_id);
  r.str("description", d.description);
  r.string_map("metadata", d.metadata);
  r.str("traceId", d.trace_id);
  r.str("idempotencyKey", d.idempotency_key);
  r.boolean("needsApproval", d.needs_approval);
  if (auto c = r.object("canary"); c && !read_canary(*c, d.canary))
    return false;
  if (auto in = r.object("input"); in && !read_plan_input(*in, d.input))
    return false;
  if (!read_steps(r.array("plan"), d.plan))
    return false;
  r.integer("cursor", d.cursor);
  r.boolean("stepStarted", d.step_started);
  r.integer("stepStartedAt", d.step_started_at);
  if (!read_steps(r.array("rollback"), d.rollback))
    return false;
  r.integer("rollbackCursor", d.rollback_cursor);
  r.boolean("rollbackStarted", d.rollback_started);
  r.str("rollbackReason", d.rollback_reason);
  r.str("rollbackOutcome", d.rollback_outcome);
  r.str("rollbackId", d.rollback_id);
  if (auto a = r.array("stages")) {
    for (auto& e : *a) {
      stage_view s;
      if (!read_stage(e, s))
        return false;
      d.stages.push_back(std::move(s));
    }
  }
  r.str("message", d.message);
  r.boolean("quotaReserved", d.quota_reserved);
  if (!r.ok || d.execution_id.empty())
    return false;
  out = std::move(d);
  return true;
}

std::string iso_duration(millis ms) {
  if (ms <= 0)
    return "PT0S";
  const int64_t hours = ms / 3'600'000;
  const int64_t minutes = (ms / 60'000) % 60;
  const int64_t seconds = (ms / 1000) % 60;
  const int64_t frac = ms % 1000;
  std::string out = "PT";
  if (hours > 0)
    out += std::to_string(hours) + "H";
  if (hours > 0 || minutes > 0)
    out += std::to_string(minutes) + "M";
  out += std::to_string(seconds);
  if (frac > 0) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), ".%03d", static_cast<int>(frac));
    std::string f(buf);
    while (f.back() == '0')
      f.pop_back();
    out += f;
  }
  out += "S";
  return out;
}

} // namespace hotswap::deploy
