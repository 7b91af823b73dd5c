#include "hotswap/actors/module_catalog.hpp"

#include "hotswap/actors/events.hpp"

#include <algorithm>
#include <cctype>

#include <boost/json.hpp>

#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/json_util.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/metrics.hpp"
#include "hotswap/runtime/module_file.hpp"

namespace hotswap {

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/// Splits "1.2.3-rc.1+build" into core numbers and pre-release identifiers.
bool parse_semver(const std::string& v, std::vector<std::string>& core,
                  std::vector<std::string>& pre) {
  auto plus = v.find('+');
  auto main = v.substr(0, plus);
  if (plus != std::string::npos) {
    auto build = v.substr(plus + 1);
    if (build.empty())
      return false;
  }
  auto dash = main.find('-');
  auto numbers = main.substr(0, dash);
  auto split = [](const std::string& s, std::vector<std::string>& out) {
    size_t i = 0;
    while (true) {
      auto j = s.find('.', i);
      out.push_back(s.substr(i, j == std::string::npos ? std::string::npos : j - i));
      if (j == std::string::npos)
        break;
      i = j + 1;
    }
  };
  split(numbers, core);
  if (core.size() != 3)
    return false;
  for (auto& n : core) {
    if (n.empty() || n.size() > 9 || !std::all_of(n.begin(), n.end(), is_digit)
        || (n.size() > 1 && n[0] == '0'))
      return false;
  }
  if (dash != std::string::npos) {
    split(main.substr(dash + 1), pre);
    for (auto& p : pre) {
      if (p.empty())
        return false;
      for (char c : p)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-'))
          return false;
      if (p.size() > 1 && p[0] == '0' && std::all_of(p.begin(), p.end(), is_digit))
        return false;
    }
  }
  return true;
}

struct catalog_state {
  catalog_env env;
  static inline const char* name = "module_catalog";
};

using catalog_ptr = module_catalog_actor::stateful_pointer<catalog_state>;

caf::expected<module_record> verify(const catalog_state& st, const module_upload& up) {
  auto fail = [](std::string why) { return caf::make_error(errc::invalid_argument, std::move(why)); };
  if (!valid_module_name(up.name))
    return fail("X-Module-Name: the module name must match ^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$");
  if (!valid_semver(up.version))
    return fail("X-Module-Version: the version must be SemVer MAJOR.MINOR.PATCH[-pre]");
  if (up.description.size() > 1000)
    return fail("X-Module-Description: at most 1000 characters");
  if (up.bytes.empty())
    return fail("the body must hold the module's shared library bytes");
  auto info = inspect_module_file(up.bytes);
  if (!info)
    return fail("not a loadable module of this runtime: " + error_detail(info.error()));
  if (info->name != up.name || info->version != up.version)
    return fail("the file declares module " + info->name + " " + info->version
                + " but was uploaded as " + up.name + " " + up.version);
  module_record r;
  r.name = up.name;
  r.version = up.version;
  r.digest = modsig::digest(up.bytes);
  r.size = static_cast<int64_t>(up.bytes.size());
  r.description = up.description;
  r.abi_token = info->abi_token;
  r.tenant_id = up.tenant_id;
  r.uploaded_by = up.username;
  r.uploaded_at = now_millis();
  if (!up.signature_b64.empty()) {
    auto sig = crypto::base64_decode(up.signature_b64);
    if (!sig || sig->empty())
      return fail("X-Module-Signature: not base64");
    auto key = st.env.keys.verify(up.bytes, *sig);
    if (!key)
      return fail("X-Module-Signature: the signature does not verify against any trusted key "
                  "(auth.trusted_module_keys)");
    r.signature = crypto::base64_encode(*sig);
    r.is_signed = true;
    r.signer_key_id = *key;
  } else if (!up.environment.empty()) {
    auto i = st.env.require_signed.find(up.environment);
    if (i != st.env.require_signed.end() && i->second)
      return fail("X-Module-Signature: unsigned modules are not allowed in " + up.environment
                  + " (require_signed_modules)");
  }
  return r;
}

module_catalog_actor::behavior_type catalog(catalog_ptr self, catalog_env env) {
  self->state.env = std::move(env);
  return {
    [=](module_atom, put_atom, module_upload& up) -> caf::result<module_put_result> {
      auto& st = self->state;
      auto rec = verify(st, up);
      if (!rec) {
        if (st.env.metrics)
          st.env.metrics->module_uploads("rejected").Increment();
        logger("http")->info("[M:{} {}] upload by {} refused: {}", up.name, up.version,
                             up.username, error_detail(rec.error()));
        return rec.error();
      }
      audit_event ev;
      ev.at = rec->uploaded_at;
      ev.category = "Module";
      ev.action = "ModuleUploaded";
      ev.result = "Success";
      ev.entity_kind = "module";
      ev.entity_id = rec->name + "@" + rec->version;
      ev.tenant_id = rec->tenant_id;
      ev.actor_user = up.username;
      ev.source_ip = up.source_ip;
      ev.trace_id = up.trace_id;
      ev.message = "uploaded " + rec->name + " " + rec->version
                   + (rec->is_signed ? " signed by " + rec->signer_key_id : " unsigned");
      boost::json::object d;
      d["digest"] = rec->digest;
      d["size"] = rec->size;
      d["signed"] = rec->is_signed;
      ev.detail = boost::json::serialize(d);
      auto rp = self->make_response_promise<module_put_result>();
      auto bytes = std::move(up.bytes);
      self->request(st.env.store, caf::infinite, module_atom::value, put_atom::value, *rec, bytes,
                    ev)
        .then(
          [=](module_put_result& r) mutable {
            if (self->state.env.metrics)
              self->state.env.metrics->module_uploads(r.created ? "stored" : "duplicate")
                .Increment();
            if (r.created) {
              event_record mev;
              mev.type = "ModuleUploaded";
              mev.tenant_id = r.record.tenant_id;
              mev.status = "Uploaded";
              boost::json::object md;
              md["module"] = r.record.name;
              md["version"] = r.record.version;
              md["digest"] = r.record.digest;
              md["signed"] = r.record.is_signed;
              md["uploadedBy"] = r.record.uploaded_by;
              mev.details = boost::json::serialize(md);
              publish_event(self, std::move(mev));
            }
            rp.deliver(std::move(r));
          },
          [=](caf::error& err) mutable {
            if (self->state.env.metrics)
              self->state.env.metrics->module_uploads("rejected").Increment();
            rp.deliver(err);
          });
      return rp;
    },
  };
}

} // namespace

bool valid_module_name(const std::string& n) {
  if (n.size() < 3 || n.size() > 64)
    return false;
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || is_digit(c); };
  if (!ok(n.front()) || !ok(n.back()))
    return false;
  return std::all_of(n.begin(), n.end(), [&](char c) { return ok(c) || c == '-'; });
}

bool valid_semver(const std::string& v) {
  std::vector<std::string> core, pre;
  return v.size() <= 128 && parse_semver(v, core, pre);
}

int compare_semver(const std::string& a, const std::string& b) {
  std::vector<std::string> ca, pa, cb, pb;
  if (!parse_semver(a, ca, pa) || !parse_semver(b, cb, pb))
    return a.compare(b);
  for (size_t i = 0; i < 3; ++i) {
    auto x = std::stoll(ca[i]);
    auto y = std::stoll(cb[i]);
    if (x != y)
      return x < y ? -1 : 1;
  }
  if (pa.empty() || pb.empty())
    return pa.empty() == pb.empty() ? 0 : (pa.empty() ? 1 : -1);
  for (size_t i = 0; i < std::min(pa.size(), pb.size()); ++i) {
    auto na = std::all_of(pa[i].begin(), pa[i].end(), is_digit);
    auto nb = std::all_of(pb[i].begin(), pb[i].end(), is_digit);
    if (na && nb) {
      auto x = std::stoll(pa[i]);
      auto y = std::stoll(pb[i]);
      if (x != y)
        return x < y ? -1 : 1;
    } else if (na != nb) {
      return na ? -1 : 1;
    } else if (auto c = pa[i].compare(pb[i]); c != 0) {
      return c < 0 ? -1 : 1;
    }
  }
  return pa.size() == pb.size() ? 0 : (pa.size() < pb.size() ? -1 : 1);
}

std::string module_record_json(const module_record& r) {
  boost::json::object o;
  o["name"] = r.name;
  o["version"] = r.version;
  o["digest"] = r.digest;
  o["size"] = r.size;
  o["signed"] = r.is_signed;
  o["signerKeyId"] = r.signer_key_id.empty() ? boost::json::value(nullptr)
                                             : boost::json::value(r.signer_key_id);
  o["description"] = r.description;
  o["abiToken"] = r.abi_token;
  o["uploadedBy"] = r.uploaded_by;
  o["uploadedAt"] = rfc3339(r.uploaded_at);
  return boost::json::serialize(o);
}

module_catalog_actor spawn_module_catalog(caf::actor_system& sys, catalog_env env) {
  return sys.spawn<caf::detached>(catalog, std::move(env));
}

} // namespace hotswap
