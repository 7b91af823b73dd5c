#pragma once

// A tenant's state and its transitions as pure functions (no CAF): the
// tenant actor keeps handlers thin and calls these.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "caf/meta/type_name.hpp"

#include "hotswap/runtime/records.hpp"

namespace hotswap {

/// Who asks, for audit and authorization; travels with every command.
struct request_ctx {
  std::string user_id;
  std::string username;
  std::string tenant_id;  ///< the caller's tenant (empty = platform user)
  std::string trace_id;
  std::string source_ip;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_ctx& x) {
  return f(caf::meta::type_name("request_ctx"), x.user_id, x.username, x.tenant_id, x.trace_id,
           x.source_ip);
}


struct resource_quota {
  int32_t max_concurrent_deployments = 0;
  int32_t max_deployments_per_day = 0;
  int32_t max_modules = 0;
  int32_t max_storage_mb = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, resource_quota& x) {
  return f(caf::meta::type_name("resource_quota"), x.max_concurrent_deployments,
           x.max_deployments_per_day, x.max_modules, x.max_storage_mb);
}

inline bool operator==(const resource_quota& a, const resource_quota& b) {
  return a.max_concurrent_deployments == b.max_concurrent_deployments
         && a.max_deployments_per_day == b.max_deployments_per_day
         && a.max_modules == b.max_modules && a.max_storage_mb == b.max_storage_mb;
}

struct tenant {
  std::string id;
  std::string name;
  std::string subdomain;
  std::string custom_domain;
  std::string contact_email;
  std::string status = "Active"; ///< Active | Suspended | Deleted
  int32_t tier = 0;              ///< tenant_tier
  resource_quota quota;
  std::map<std::string, std::string> metadata;
  millis created_at = 0;
  millis updated_at = 0;
  millis suspended_at = 0;
  millis deleted_at = 0;
  /// Quota reservations of running deployments (execution ids).
  std::vector<std::string> running_deployments;
  std::string usage_day;         ///< UTC day of deployments_today ("2026-11-27")
  int32_t deployments_today = 0; ///< reservations made on usage_day
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tenant& x) {
  return f(caf::meta::type_name("tenant"), x.id, x.name, x.subdomain, x.custom_domain,
           x.contact_email, x.status, x.tier, x.quota, x.metadata, x.created_at, x.updated_at,
           x.suspended_at, x.deleted_at, x.running_deployments, x.usage_day,
           x.deployments_today);
}

/// Input of a create; already parsed from JSON. `tier` < 0 = missing.
struct tenant_spec {
  std::string name;
  std::string subdomain;
  std::string custom_domain;
  std::string contact_email;
  int32_t tier = -1;
  bool has_quota = false;                ///< required for Custom
  resource_quota quota;
  std::map<std::string, std::string> metadata;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tenant_spec& x) {
  return f(caf::meta::type_name("tenant_spec"), x.name, x.subdomain, x.custom_domain,
           x.contact_email, x.tier, x.has_quota, x.quota, x.metadata);
}

/// Input of an update: only the present fields change.
struct tenant_patch {
  bool has_name = false;
  std::string name;
  bool has_contact_email = false;
  std::string contact_email;
  bool has_custom_domain = false;
  std::string custom_domain;
  bool has_metadata = false;
  std::map<std::string, std::string> metadata;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tenant_patch& x) {
  return f(caf::meta::type_name("tenant_patch"), x.has_name, x.name, x.has_contact_email,
           x.contact_email, x.has_custom_domain, x.custom_domain, x.has_metadata, x.metadata);
}

/// Lifecycle operations (an int32_t on the wire).
namespace tenant_op {
constexpr int32_t suspend = 1;
constexpr int32_t activate = 2;
constexpr int32_t remove = 3;
} // namespace tenant_op

/// A tier change, with the quota for Custom.
struct tier_change {
  int32_t tier = -1;
  bool has_quota = false;
  resource_quota quota;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tier_change& x) {
  return f(caf::meta::type_name("tier_change"), x.tier, x.has_quota, x.quota);
}

/// Validation errors: field name -> messages (empty = valid).
using field_errors = std::map<std::string, std::vector<std::string>>;

/// Tier names in legacy integer order.
const std::vector<std::string>& tier_names();

/// Parses a tier name (case-insensitive); -1 when unknown.
int32_t parse_tier(const std::string& name);

/// The quota of a fixed tier (Custom returns the zero quota).
resource_quota quota_for(int32_t tier);

field_errors validate(const tenant_spec& spec);
field_errors validate(const tenant_patch& patch);
field_errors validate(const tier_change& change);

/// The outcome of a transition: the new state, or a reason it is refused
/// (conflict), or "no change" (idempotent repeat: nothing to persist).
struct transition {
  enum kind_t { changed, unchanged, refused } kind = changed;
  tenant next;
  std::string reason;   ///< for refused
  std::string action;   ///< audit action for changed ("TenantSuspended", ...)
};

tenant make_tenant(const std::string& id, const tenant_spec& spec, millis now);
transition apply(const tenant& t, const tenant_patch& patch, millis now);
transition apply(const tenant& t, int32_t op, millis now);
transition apply(const tenant& t, const tier_change& change, millis now);

/// Reserves quota for deployment `execution_id` at `now`. Idempotent (a
/// held reservation is unchanged). Refused when the tenant is not Active,
/// or when maxConcurrentDeployments or maxDeploymentsPerDay would be
/// exceeded (the reason names the quota).
transition reserve(const tenant& t, const std::string& execution_id, millis now);

/// Releases the reservation of `execution_id` (unchanged when not held).
transition release(const tenant& t, const std::string& execution_id, millis now);

/// JSON of the snapshot body and of the API (the same shape: api-v1.md,
/// plus `usage`: runningDeployments, deploymentsToday, usageDay).
std::string to_json(const tenant& t);
bool from_json(const std::string& text, tenant& out);

/// A lower-case copy (ASCII).
std::string lower(std::string s);

} // namespace hotswap
