#include "hotswap/runtime/store_actor.hpp"

#include <chrono>
#include <exception>
#include <utility>

#include "caf/actor_cast.hpp"
#include "caf/actor_pool.hpp"
#include "caf/result.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/metrics.hpp"

namespace hotswap {

namespace {

struct store_worker_state {
  std::shared_ptr<store> db; // sole owner; shared_ptr only to pass it through spawn
  node_metrics* metrics = nullptr;
  const char* name = "hotswap.store_worker";
};

using worker_ptr = store_actor::stateful_pointer<store_worker_state>;

// Runs `f` (returning caf::expected<T>) and converts the outcome into a
// caf::result<R> via `conv`. No exception escapes into the actor.
template <class R, class F, class Conv>
caf::result<R> call(F f, Conv conv) {
  try {
    auto x = f();
    if (!x)
      return std::move(x.error());
    return conv(*x);
  } catch (const std::exception& e) {
    return caf::make_error(errc::internal, std::string{"store call threw: "} + e.what());
  } catch (...) {
    return caf::make_error(errc::internal, "store call threw an unknown exception");
  }
}

template <class R, class F>
caf::result<R> call(F f) {
  return call<R>(std::move(f), [](auto& x) -> R { return std::move(x); });
}

template <class F>
caf::result<ok_atom> call_ok(F f) {
  try {
    auto x = f();
    if (!x)
      return std::move(x.error());
    return ok_atom::value;
  } catch (const std::exception& e) {
    return caf::make_error(errc::internal, std::string{"store call threw: "} + e.what());
  } catch (...) {
    return caf::make_error(errc::internal, "store call threw an unknown exception");
  }
}

store_actor::behavior_type store_worker(worker_ptr self, std::shared_ptr<store> db,
                                        node_metrics* metrics) {
  self->state.db = std::move(db);
  self->state.metrics = metrics;
  auto st = &self->state;
  return {
    [st](ping_atom) { return call_ok([&] { return st->db->ping(); }); },
    [st](claim_atom, const std::string& kind, const std::string& id, const std::string& node) {
      return call<claim_result>([&] { return st->db->claim(kind, id, node); });
    },
    [st](put_atom, const snapshot_record& snap, const audit_event& ev) -> caf::result<int64_t> {
      auto t0 = std::chrono::steady_clock::now();
      auto res = call<int64_t>([&] { return st->db->put(snap, ev); });
      if (st->metrics != nullptr) {
        std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
        st->metrics->snapshot_write_seconds().Observe(dt.count());
        if (res.flag == caf::rt_error && errc_of(res.err) == errc::fenced)
          st->metrics->fenced_writes().Increment();
      }
      return res;
    },
    [st](release_atom, const std::string& kind, const std::string& id, const std::string& node,
         int64_t epoch) {
      return call_ok([&] { return st->db->release(kind, id, node, epoch); });
    },
    [st](get_atom, const std::string& kind, const std::string& id) {
      return call<snapshot_record>([&] { return st->db->get(kind, id); },
                                   [&](std::optional<snapshot_record>& x)
                                     -> caf::result<snapshot_record> {
                                     if (!x)
                                       return caf::make_error(errc::not_found,
                                                              "no entity " + kind + "/" + id);
                                     return std::move(*x);
                                   });
    },
    [st](list_atom, const snapshot_query& q) {
      return call<std::vector<snapshot_record>>([&] { return st->db->list(q); });
    },
    [st](audit_atom, const audit_event& ev) {
      return call<int64_t>([&] { return st->db->append_audit(ev); });
    },
    [st](audit_atom, const audit_query& q) {
      return call<std::vector<audit_event>>([&] { return st->db->query_audit(q); });
    },
    [st](user_atom, create_atom, const user_record& u, const audit_event& ev) {
      return call_ok([&] { return st->db->create_user(u, ev); });
    },
    [st](user_atom, update_atom, const user_record& u, const audit_event& ev) {
      return call_ok([&] { return st->db->update_user(u, ev); });
    },
    [st](user_atom, delete_atom, const std::string& id, const audit_event& ev) {
      return call_ok([&] { return st->db->delete_user(id, ev); });
    },
    [st](user_atom, login_atom, const std::string& id, int32_t failed, millis locked_until,
         const audit_event& ev) {
      return call_ok([&] { return st->db->record_login(id, failed, locked_until, ev); });
    },
    [st](user_atom, get_atom, const std::string& id) {
      return call<user_record>([&] { return st->db->user_by_id(id); },
                               [&](std::optional<user_record>& x) -> caf::result<user_record> {
                                 if (!x)
                                   return caf::make_error(errc::not_found,
                                                          "no user with id '" + id + "'");
                                 return std::move(*x);
                               });
    },
    [st](user_atom, name_atom, const std::string& name) {
      return call<user_record>([&] { return st->db->user_by_name(name); },
                               [&](std::optional<user_record>& x) -> caf::result<user_record> {
                                 if (!x)
                                   return caf::make_error(errc::not_found,
                                                          "no user named '" + name + "'");
                                 return std::move(*x);
                               });
    },
    [st](user_atom, list_atom) {
      return call<std::vector<user_record>>([&] { return st->db->list_users(); });
    },
    [st](user_atom, count_atom) {
      return call<int64_t>([&] { return st->db->count_users(); });
    },
    [st](key_atom, get_atom) {
      return call<std::vector<signing_key>>([&] { return st->db->signing_keys(); });
    },
    [st](key_atom, put_atom, const signing_key& k) {
      return call<std::vector<signing_key>>([&] { return st->db->ensure_signing_key(k); });
    },
  };
}

} // namespace

store_actor spawn_store_worker(caf::actor_system& sys, std::unique_ptr<store> db,
                               node_metrics* metrics, bool detached) {
  std::shared_ptr<store> shared{std::move(db)};
  if (detached)
    return sys.spawn<caf::detached>(store_worker, std::move(shared), metrics);
  return sys.spawn(store_worker, std::move(shared), metrics);
}

caf::expected<store_actor> spawn_store_pool(caf::actor_system& sys, const std::string& url,
                                            size_t workers, node_metrics* metrics) {
  if (workers == 0)
    workers = 1;
  // Every SQLite :memory: connection is a database of its own: one worker.
  if (url == "sqlite://:memory:")
    workers = 1;
  std::vector<std::unique_ptr<store>> dbs;
  dbs.reserve(workers);
  for (size_t i = 0; i < workers; ++i) {
    auto db = open_store(url);
    if (!db)
      return std::move(db.error());
    dbs.push_back(std::move(*db));
  }
  auto version = dbs.front()->migrate();
  if (!version)
    return std::move(version.error());
  size_t next = 0;
  auto factory = [&]() -> caf::actor {
    return caf::actor_cast<caf::actor>(
      spawn_store_worker(sys, std::move(dbs[next++]), metrics, true));
  };
  // The pool monitors its workers and sends them an exit message when it
  // is told to quit (exit_msg), so one anon_send_exit stops everything.
  auto pool = caf::actor_pool::make(sys.dummy_execution_unit(), workers, factory,
                                    caf::actor_pool::round_robin());
  return caf::actor_cast<store_actor>(pool);
}

} // namespace hotswap
