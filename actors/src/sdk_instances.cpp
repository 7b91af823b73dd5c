// Explicit instances of the message storage of every message shape the
// module SDK allows (hotswap/module.hpp). Executables that load modules are
// linked with ENABLE_EXPORTS, so a module's copies of these templates
// (vague linkage, default visibility) bind to the executable's: a message a
// module created (a reply, a timer) never points into the module's code, and
// the library can be dlclose'd while such a message is still alive.

#include "caf/detail/tuple_vals.hpp"
#include "caf/detail/type_erased_value_impl.hpp"

#include "hotswap/module.hpp"

namespace caf::detail {

using namespace hotswap;

template class tuple_vals<sdk::reply>;
template class tuple_vals<atom_value, sdk::request>;
template class tuple_vals<atom_value, std::string, sdk::request>;
template class tuple_vals<atom_value, std::string>;
template class tuple_vals<atom_value, sdk::event>;
template class tuple_vals<atom_value, sdk::metric>;
template class tuple_vals<atom_value>;
template class tuple_vals<atom_value, uint64_t>;
template class tuple_vals<std::string>;

template class tuple_vals_impl<message_data, sdk::reply>;
template class tuple_vals_impl<message_data, atom_value, sdk::request>;
template class tuple_vals_impl<message_data, atom_value, std::string, sdk::request>;
template class tuple_vals_impl<message_data, atom_value, std::string>;
template class tuple_vals_impl<message_data, atom_value, sdk::event>;
template class tuple_vals_impl<message_data, atom_value, sdk::metric>;
template class tuple_vals_impl<message_data, atom_value>;
template class tuple_vals_impl<message_data, atom_value, uint64_t>;
template class tuple_vals_impl<message_data, std::string>;

template class type_erased_value_impl<sdk::reply>;
template class type_erased_value_impl<sdk::request>;
template class type_erased_value_impl<sdk::event>;
template class type_erased_value_impl<sdk::metric>;

} // namespace caf::detail

namespace hotswap {

/// Referenced by module_host.cpp so that static linking keeps this object.
int sdk_instances_anchor = 0;

} // namespace hotswap
