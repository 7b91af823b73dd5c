#include "hotswap/actors/tenant_state.hpp"

#include <algorithm>
#include <ctime>

#include <algorithm>
#include <cctype>
#include <regex>

#include <boost/json.hpp>

#include "hotswap/actors/json_util.hpp"

namespace hotswap {

namespace json = boost::json;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

const std::vector<std::string>& tier_names() {
  static const std::vector<std::string> names{"Free", "Starter", "Professional", "Enterprise",
                                              "Custom"};
  return names;
}

int32_t parse_tier(const std::string& name) {
  auto l = lower(name);
  const auto& names = tier_names();
  for (size_t i = 0; i < names.size(); ++i)
    if (lower(names[i]) == l)
      return static_cast<int32_t>(i);
  return -1;
}

resource_quota quota_for(int32_t tier) {
  switch (tier) {
    case 0: return {1, 10, 5, 1024};
    case 1: return {3, 50, 20, 10240};
    case 2: return {10, 200, 100, 102400};
    case 3: return {50, 1000, 1000, 1048576};
    default: return {};
  }
}

namespace {

bool valid_subdomain(const std::string& s) {
  static const std::regex re{"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"};
  return std::regex_match(lower(s), re);
}

bool valid_domain(const std::string& s) {
  static const std::regex re{
    "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$"};
  return s.size() <= 253 && std::regex_match(lower(s), re);
}

void check_name(const std::string& name, field_errors& errs) {
  if (name.empty() || name.size() > 200 || std::all_of(name.begin(), name.end(), ::isspace))
    errs["name"].push_back("The name must be 1 to 200 characters and not blank.");
}

void check_email(const std::string& email, const char* field, field_errors& errs) {
  if (!valid_email(email))
    errs[field].push_back("A valid e-mail address is required.");
}

void check_metadata(const std::map<std::string, std::string>& md, field_errors& errs) {
  if (md.size() > 50)
    errs["metadata"].push_back("At most 50 metadata entries are allowed.");
  for (auto& [k, v] : md) {
    if (k.empty() || k.size() > 100)
      errs["metadata"].push_back("Metadata keys must be 1 to 100 characters.");
    if (v.size() > 500)
      errs["metadata"].push_back("Metadata values must be at most 500 characters.");
  }
}

void check_quota(const resource_quota& q, field_errors& errs) {
  if (q.max_concurrent_deployments < 1 || q.max_deployments_per_day < 1 || q.max_modules < 1
      || q.max_storage_mb < 1)
    errs["resourceQuota"].push_back("Every quota value must be a positive integer.");
}

void check_tier(int32_t tier, bool has_quota, const resource_quota& q, field_errors& errs) {
  if (tier < 0 || tier > 4) {
    errs["tier"].push_back(
      "The tier must be Free, Starter, Professional, Enterprise or Custom (or 0-4).");
    return;
  }
  if (tier == 4) {
    if (!has_quota)
      errs["resourceQuota"].push_back("The Custom tier requires a resourceQuota.");
    else
      check_quota(q, errs);
  }
}

} // namespace

field_errors validate(const tenant_spec& spec) {
  field_errors errs;
  check_name(spec.name, errs);
  if (!valid_subdomain(spec.subdomain))
    errs["subdomain"].push_back(
      "The subdomain must be 1 to 63 letters, digits or hyphens, not starting or ending with "
      "a hyphen.");
  check_tier(spec.tier, spec.has_quota, spec.quota, errs);
  check_email(spec.contact_email, "contactEmail", errs);
  if (!spec.custom_domain.empty() && !valid_domain(spec.custom_domain))
    errs["customDomain"].push_back("The custom domain must be a valid host name.");
  check_metadata(spec.metadata, errs);
  return errs;
}

field_errors validate(const tenant_patch& p) {
  field_errors errs;
  if (p.has_name)
    check_name(p.name, errs);
  if (p.has_contact_email)
    check_email(p.contact_email, "contactEmail", errs);
  if (p.has_custom_domain && !p.custom_domain.empty() && !valid_domain(p.custom_domain))
    errs["customDomain"].push_back("The custom domain must be a valid host name.");
  if (p.has_metadata)
    check_metadata(p.metadata, errs);
  return errs;
}

field_errors validate(const tier_change& c) {
  field_errors errs;
  check_tier(c.tier, c.has_quota, c.quota, errs);
  return errs;
}

tenant make_tenant(const std::string& id, const tenant_spec& spec, millis now) {
  tenant t;
  t.id = id;
  t.name = spec.name;
  t.subdomain = lower(spec.subdomain);
  t.custom_domain = lower(spec.custom_domain);
  t.contact_email = spec.contact_email;
  t.status = "Active";
  t.tier = spec.tier;
  t.quota = spec.tier == 4 ? spec.quota : quota_for(spec.tier);
  t.metadata = spec.metadata;
  t.created_at = now;
  t.updated_at = now;
  return t;
}

namespace {

transition refused(const tenant& t, std::string reason) {
  return {transition::refused, t, std::move(reason), {}};
}

transition unchanged(const tenant& t) {
  return {transition::unchanged, t, {}, {}};
}

} // namespace

transition apply(const tenant& t, const tenant_patch& p, millis now) {
  if (t.status == "Deleted")
    return refused(t, "The tenant is deleted and cannot be changed.");
  auto next = t;
  if (p.has_name)
    next.name = p.name;
  if (p.has_contact_email)
    next.contact_email = p.contact_email;
  if (p.has_custom_domain)
    next.custom_domain = lower(p.custom_domain);
  if (p.has_metadata)
    next.metadata = p.metadata;
  next.updated_at = now;
  return {transition::changed, next, {}, "TenantUpdated"};
}

transition apply(const tenant& t, int32_t op, millis now) {
  auto next = t;
  switch (op) {
    case tenant_op::suspend:
      if (t.status == "Deleted")
        return refused(t, "A deleted tenant cannot be suspended.");
      if (t.status == "Suspended")
        return unchanged(t);
      next.status = "Suspended";
      next.suspended_at = now;
      next.updated_at = now;
      return {transition::changed, next, {}, "TenantSuspended"};
    case tenant_op::activate:
      if (t.status == "Deleted")
        return refused(t, "A deleted tenant cannot be activated.");
      if (t.status == "Active")
        return unchanged(t);
      next.status = "Active";
      next.suspended_at = 0;
      next.updated_at = now;
      return {transition::changed, next, {}, "TenantActivated"};
    case tenant_op::remove:
      if (t.status == "Deleted")
        return unchanged(t);
      next.status = "Deleted";
      next.deleted_at = now;
      next.updated_at = now;
      return {transition::changed, next, {}, "TenantDeleted"};
    default:
      return refused(t, "Unknown tenant operation.");
  }
}

transition apply(const tenant& t, const tier_change& c, millis now) {
  if (t.status == "Deleted")
    return refused(t, "The subscription of a deleted tenant cannot be changed.");
  auto next = t;
  next.tier = c.tier;
  next.quota = c.tier == 4 ? c.quota : quota_for(c.tier);
  if (next.tier == t.tier && next.quota == t.quota)
    return unchanged(t);
  next.updated_at = now;
  return {transition::changed, next, {}, "TenantSubscriptionChanged"};
}

std::string to_json(const tenant& t) {
  json::object q;
  q["maxConcurrentDeployments"] = t.quota.max_concurrent_deployments;
  q["maxDeploymentsPerDay"] = t.quota.max_deployments_per_day;
  q["maxModules"] = t.quota.max_modules;
  q["maxStorageMB"] = t.quota.max_storage_mb;
  json::object md;
  for (auto& [k, v] : t.metadata)
    md[k] = v;
  json::object o;
  o["tenantId"] = t.id;
  o["name"] = t.name;
  o["subdomain"] = t.subdomain;
  o["customDomain"] = t.custom_domain.empty() ? json::value(nullptr) : json::value(t.custom_domain);
  o["status"] = t.status;
  o["tier"] = t.tier >= 0 && t.tier <= 4 ? tier_names()[static_cast<size_t>(t.tier)] : "Free";
  o["resourceQuota"] = std::move(q);
  o["createdAt"] = rfc3339_or_null(t.created_at);
  o["suspendedAt"] = rfc3339_or_null(t.suspended_at);
  o["deletedAt"] = rfc3339_or_null(t.deleted_at);
  o["contactEmail"] = t.contact_email;
  o["metadata"] = std::move(md);
  json::object usage;
  json::array running;
  for (auto& id : t.running_deployments)
    running.emplace_back(id);
  usage["runningDeployments"] = std::move(running);
  usage["usageDay"] = t.usage_day;
  usage["deploymentsToday"] = t.deployments_today;
  o["usage"] = std::move(usage);
  return json::serialize(o);
}

namespace {

std::string utc_day(millis now) {
  auto secs = static_cast<time_t>(now / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

} // namespace

transition reserve(const tenant& t, const std::string& execution_id, millis now) {
  transition tr;
  tr.next = t;
  auto& r = t.running_deployments;
  if (std::find(r.begin(), r.end(), execution_id) != r.end()) {
    tr.kind = transition::unchanged;
    return tr;
  }
  if (t.status != "Active") {
    tr.kind = transition::refused;
    tr.reason = "Tenant " + t.id + " is " + t.status + "; it cannot start deployments.";
    return tr;
  }
  auto day = utc_day(now);
  auto today = t.usage_day == day ? t.deployments_today : 0;
  if (static_cast<int32_t>(r.size()) >= t.quota.max_concurrent_deployments) {
    tr.kind = transition::refused;
    tr.reason = "Quota maxConcurrentDeployments (" + std::to_string(t.quota.max_concurrent_deployments)
                + ") of tenant " + t.id + " is exhausted: " + std::to_string(r.size())
                + " deployment(s) running.";
    return tr;
  }
  if (today >= t.quota.max_deployments_per_day) {
    tr.kind = transition::refused;
    tr.reason = "Quota maxDeploymentsPerDay (" + std::to_string(t.quota.max_deployments_per_day)
                + ") of tenant " + t.id + " is exhausted for " + day + ".";
    return tr;
  }
  tr.kind = transition::changed;
  tr.next.running_deployments.push_back(execution_id);
  tr.next.usage_day = day;
  tr.next.deployments_today = today + 1;
  tr.next.updated_at = now;
  tr.action = "QuotaReserved";
  return tr;
}

transition release(const tenant& t, const std::string& execution_id, millis now) {
  transition tr;
  tr.next = t;
  auto& r = tr.next.running_deployments;
  auto i = std::find(r.begin(), r.end(), execution_id);
  if (i == r.end()) {
    tr.kind = transition::unchanged;
    return tr;
  }
  r.erase(i);
  tr.kind = transition::changed;
  tr.next.updated_at = now;
  tr.action = "QuotaReleased";
  return tr;
}

bool from_json(const std::string& text, tenant& t) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object())
    return false;
  auto& o = v.as_object();
  t.id = get_string(o, "tenantId");
  t.name = get_string(o, "name");
  t.subdomain = get_string(o, "subdomain");
  t.custom_domain = get_string(o, "customDomain");
  t.status = get_string(o, "status");
  t.tier = parse_tier(get_string(o, "tier"));
  t.contact_email = get_string(o, "contactEmail");
  if (auto q = o.if_contains("resourceQuota"); q && q->is_object()) {
    auto& qo = q->as_object();
    t.quota.max_concurrent_deployments = static_cast<int32_t>(get_int(qo, "maxConcurrentDeployments"));
    t.quota.max_deployments_per_day = static_cast<int32_t>(get_int(qo, "maxDeploymentsPerDay"));
    t.quota.max_modules = static_cast<int32_t>(get_int(qo, "maxModules"));
    t.quota.max_storage_mb = static_cast<int32_t>(get_int(qo, "maxStorageMB"));
  }
  t.metadata.clear();
  if (auto md = o.if_contains("metadata"); md && md->is_object())
    for (auto& kv : md->as_object())
      if (kv.value().is_string())
        t.metadata[std::string(kv.key())] = std::string(kv.value().as_string());
  t.created_at = parse_rfc3339(get_string(o, "createdAt"));
  t.updated_at = t.created_at; // the snapshot row keeps the real updated_at
  t.suspended_at = parse_rfc3339(get_string(o, "suspendedAt"));
  t.deleted_at = parse_rfc3339(get_string(o, "deletedAt"));
  t.running_deployments.clear();
  t.usage_day.clear();
  t.deployments_today = 0;
  if (auto u = o.if_contains("usage"); u && u->is_object()) {
    auto& uo = u->as_object();
    if (auto r = uo.if_contains("runningDeployments"); r && r->is_array())
      for (auto& x : r->as_array())
        if (x.is_string())
          t.running_deployments.emplace_back(x.as_string());
    t.usage_day = get_string(uo, "usageDay");
    t.deployments_today = static_cast<int32_t>(get_int(uo, "deploymentsToday"));
  }
  return !t.id.empty() && t.tier >= 0;
}

} // namespace hotswap
