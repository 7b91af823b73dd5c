#include "hotswap/runtime/store_actor.hpp"

#include <atomic>
#include <chrono>
#include <limits>
#include <vector>
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

/// Requests queued or running per pool worker, so the pool hands a request
/// to an idle connection instead of queueing it behind a busy one (round
/// robin does that whenever clients are sequential).
class load_table {
public:
  explicit load_table(size_t n) : slots_(n) {
  }

  void add(caf::actor_id id) {
    slots_[used_++].id = id;
  }

  std::atomic<int>* counter(caf::actor_id id) {
    for (size_t i = 0; i < used_; ++i)
      if (slots_[i].id == id)
        return &slots_[i].load;
    return nullptr;
  }

private:
  struct slot {
    caf::actor_id id = 0;
    std::atomic<int> load{0};
  };
  std::vector<slot> slots_;
  size_t used_ = 0; // written only while the pool is built
};

/// The pool's dispatch policy: the least loaded worker, ties broken by a
/// rotating start so that idle workers share the work.
struct least_loaded {
  std::shared_ptr<load_table> table;
  std::shared_ptr<std::atomic<size_t>> next = std::make_shared<std::atomic<size_t>>(0);

  void operator()(caf::actor_system&, caf::actor_pool::uplock& guard,
                  const caf::actor_pool::actor_vec& vec, caf::mailbox_element_ptr& ptr,
                  caf::execution_unit* host) {
    auto n = vec.size();
    auto start = next->fetch_add(1, std::memory_order_relaxed) % n;
    size_t best = start;
    std::atomic<int>* best_counter = nullptr;
    int best_load = std::numeric_limits<int>::max();
    for (size_t k = 0; k < n; ++k) {
      auto i = (start + k) % n;
      auto c = table->counter(vec[i].id());
      auto load = c ? c->load(std::memory_order_relaxed) : 0;
      if (load < best_load) {
        best = i;
        best_load = load;
        best_counter = c;
        if (load == 0)
          break;
      }
    }
    if (best_counter)
      best_counter->fetch_add(1, std::memory_order_relaxed);
    auto selected = vec[best];
    guard.unlock();
    selected->enqueue(std::move(ptr), host);
  }
};

struct store_worker_state {
  std::shared_ptr<store> db; // sole owner; shared_ptr only to pass it through spawn
  node_metrics* metrics = nullptr;
  std::shared_ptr<load_table> loads; ///< null outside a pool
  std::atomic<int>* load = nullptr;  ///< this worker's counter, found on first use
  const char* name = "hotswap.store_worker";
};

/// Marks one request of this worker as done when the handler returns.
struct load_guard {
  explicit load_guard(store_worker_state* st, caf::actor_id self_id) {
    if (st->loads && st->load == nullptr)
      st->load = st->loads->counter(self_id);
    counter = st->load;
  }
  ~load_guard() {
    if (counter)
      counter->fetch_sub(1, std::memory_order_relaxed);
  }
  load_guard(const load_guard&) = delete;
  load_guard& operator=(const load_guard&) = delete;
  std::atomic<int>* counter;
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
                                        node_metrics* metrics, std::shared_ptr<load_table> loads) {
  self->state.db = std::move(db);
  self->state.metrics = metrics;
  self->state.loads = std::move(loads);
  auto st = &self->state;
  auto self_id = self->id();
  return {
    [st, self_id](ping_atom) {
      load_guard g{st, self_id};
      return call_ok([&] { return st->db->ping(); }); },
    [st, self_id](claim_atom, const std::string& kind, const std::string& id, const std::string& node) {
      load_guard g{st, self_id};
      return call<claim_result>([&] { return st->db->claim(kind, id, node); });
    },
    [st, self_id](put_atom, const snapshot_record& snap, const audit_event& ev) -> caf::result<int64_t> {
      load_guard g{st, self_id};
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
    [st, self_id](release_atom, const std::string& kind, const std::string& id, const std::string& node,
         int64_t epoch) {
      load_guard g{st, self_id};
      return call_ok([&] { return st->db->release(kind, id, node, epoch); });
    },
    [st, self_id](get_atom, const std::string& kind, const std::string& id) {
      load_guard g{st, self_id};
      return call<snapshot_record>([&] { return st->db->get(kind, id); },
                                   [&](std::optional<snapshot_record>& x)
                                     -> caf::result<snapshot_record> {
                                     if (!x)
                                       return caf::make_error(errc::not_found,
                                                              "no entity " + kind + "/" + id);
                                     return std::move(*x);
                                   });
    },
    [st, self_id](list_atom, const snapshot_query& q) {
      load_guard g{st, self_id};
      return call<std::vector<snapshot_record>>([&] { return st->db->list(q); });
    },
    [st, self_id](audit_atom, const audit_event& ev) {
      load_guard g{st, self_id};
      return call<int64_t>([&] { return st->db->append_audit(ev); });
    },
    [st, self_id](audit_atom, const audit_query& q) {
      load_guard g{st, self_id};
      return call<std::vector<audit_event>>([&] { return st->db->query_audit(q); });
    },
    [st, self_id](user_atom, create_atom, const user_record& u, const audit_event& ev) {
      load_guard g{st, self_id};
      return call_ok([&] { return st->db->create_user(u, ev); });
    },
    [st, self_id](user_atom, update_atom, const user_record& u, const audit_event& ev) {
      load_guard g{st, self_id};
      return call_ok([&] { return st->db->update_user(u, ev); });
    },
    [st, self_id](user_atom, delete_atom, const std::string& id, const audit_event& ev) {
      load_guard g{st, self_id};
      return call_ok([&] { return st->db->delete_user(id, ev); });
    },
    [st, self_id](user_atom, login_atom, const std::string& id, int32_t failed, millis locked_until,
         const audit_event& ev) {
      load_guard g{st, self_id};
      return call_ok([&] { return st->db->record_login(id, failed, locked_until, ev); });
    },
    [st, self_id](user_atom, failed_atom, const std::string& id, int32_t max_attempts,
                  millis lock_until, const audit_event& ev) {
      load_guard g{st, self_id};
      return call<millis>(
        [&] { return st->db->record_failed_login(id, max_attempts, lock_until, ev); });
    },
    [st, self_id](user_atom, get_atom, const std::string& id) {
      load_guard g{st, self_id};
      return call<user_record>([&] { return st->db->user_by_id(id); },
                               [&](std::optional<user_record>& x) -> caf::result<user_record> {
                                 if (!x)
                                   return caf::make_error(errc::not_found,
                                                          "no user with id '" + id + "'");
                                 return std::move(*x);
                               });
    },
    [st, self_id](user_atom, name_atom, const std::string& name) {
      load_guard g{st, self_id};
      return call<user_record>([&] { return st->db->user_by_name(name); },
                               [&](std::optional<user_record>& x) -> caf::result<user_record> {
                                 if (!x)
                                   return caf::make_error(errc::not_found,
                                                          "no user named '" + name + "'");
                                 return std::move(*x);
                               });
    },
    [st, self_id](user_atom, list_atom) {
      load_guard g{st, self_id};
      return call<std::vector<user_record>>([&] { return st->db->list_users(); });
    },
    [st, self_id](user_atom, count_atom) {
      load_guard g{st, self_id};
      return call<int64_t>([&] { return st->db->count_users(); });
    },
    [st, self_id](key_atom, get_atom) {
      load_guard g{st, self_id};
      return call<std::vector<signing_key>>([&] { return st->db->signing_keys(); });
    },
    [st, self_id](key_atom, put_atom, const signing_key& k) {
      load_guard g{st, self_id};
      return call<std::vector<signing_key>>([&] { return st->db->ensure_signing_key(k); });
    },
    [st, self_id](module_atom, put_atom, const module_record& m, const std::string& bytes,
                  const audit_event& ev) {
      load_guard g{st, self_id};
      return call<module_put_result>([&] { return st->db->put_module(m, bytes, ev); });
    },
    [st, self_id](module_atom, get_atom, const std::string& name, const std::string& version) {
      load_guard g{st, self_id};
      return call<module_record>([&] { return st->db->get_module(name, version); },
                                 [&](std::optional<module_record>& x)
                                   -> caf::result<module_record> {
                                   if (!x)
                                     return caf::make_error(errc::not_found,
                                                            "no module " + name + " " + version);
                                   return std::move(*x);
                                 });
    },
    [st, self_id](module_atom, blob_atom, const std::string& name, const std::string& version) {
      load_guard g{st, self_id};
      return call<std::string>([&] { return st->db->module_bytes(name, version); },
                               [&](std::optional<std::string>& x) -> caf::result<std::string> {
                                 if (!x)
                                   return caf::make_error(errc::not_found,
                                                          "no module " + name + " " + version);
                                 return std::move(*x);
                               });
    },
    [st, self_id](module_atom, list_atom, const std::string& name) {
      load_guard g{st, self_id};
      return call<std::vector<module_record>>([&] { return st->db->list_modules(name); });
    },
  };
}

} // namespace

store_actor spawn_store_worker(caf::actor_system& sys, std::unique_ptr<store> db,
                               node_metrics* metrics, bool detached) {
  std::shared_ptr<store> shared{std::move(db)};
  if (detached)
    return sys.spawn<caf::detached>(store_worker, std::move(shared), metrics,
                                    std::shared_ptr<load_table>{});
  return sys.spawn(store_worker, std::move(shared), metrics, std::shared_ptr<load_table>{});
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
  auto loads = std::make_shared<load_table>(workers);
  auto factory = [&]() -> caf::actor {
    std::shared_ptr<store> db{std::move(dbs[next++])};
    auto worker = sys.spawn<caf::detached>(store_worker, std::move(db), metrics, loads);
    loads->add(worker.id());
    return caf::actor_cast<caf::actor>(worker);
  };
  // The pool monitors its workers and sends them an exit message when it
  // is told to quit (exit_msg), so one anon_send_exit stops everything.
  auto pool = caf::actor_pool::make(sys.dummy_execution_unit(), workers, factory,
                                    least_loaded{loads});
  return caf::actor_cast<store_actor>(pool);
}

} // namespace hotswap
