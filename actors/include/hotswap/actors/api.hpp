#pragma once

// The HTTP bridge actor: takes each request from the Beast server, routes it,
// authenticates (JWT), applies rate limits and RBAC, and turns it into actor
// requests whose answers become the HTTP response. Never blocks.

#include <memory>
#include <string>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/allowed_unsafe_message_type.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/approval.hpp"
#include "hotswap/actors/deployment.hpp"
#include "hotswap/actors/fleet.hpp"
#include "hotswap/actors/http_types.hpp"
#include "hotswap/actors/identity.hpp"
#include "hotswap/actors/messages.hpp"
#include "hotswap/actors/module_catalog.hpp"
#include "hotswap/actors/module_host.hpp"
#include "hotswap/actors/rate_limiter.hpp"
#include "hotswap/actors/shared_limiter.hpp"
#include "hotswap/actors/tenant.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/config/config.hpp"
#include "hotswap/runtime/metrics.hpp"
#include "hotswap/runtime/store_actor.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hotswap::http_exchange_ptr)

namespace hotswap {

struct api_env {
  std::shared_ptr<const config::node_config> cfg;
  store_actor store;
  registry_actor registry;
  tenant_host_actor tenants;
  identity_actor identity;
  node_metrics* metrics = nullptr;
  std::shared_ptr<rate_limiter> limiter;
  /// The cluster-wide buckets in Redis; null on a single node. When it
  /// fails, requests take from `limiter` instead.
  shared_limiter_actor shared_limiter;
  std::vector<signing_key> keys;
  /// This node's workers by environment (empty without the worker role).
  std::map<std::string, module_host_actor> hosts;
  /// The workers of every environment across the cluster (invocations for
  /// an environment this node does not serve go there).
  worker_registry_ptr workers;
  module_catalog_actor catalog;
  fleet_actor fleet;
  deployment_host_actor deployments;
  approval_host_actor approvals;
  /// The message queue (Messages API); null without the api role.
  message_broker_actor messages;
};

using bridge_actor = caf::typed_actor<caf::reacts_to<http_exchange_ptr>,
                                      caf::reacts_to<tick_atom>>; // deadline sweep

bridge_actor spawn_bridge(caf::actor_system& sys, api_env env);

} // namespace hotswap
