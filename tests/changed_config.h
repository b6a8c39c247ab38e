// A ModelConfig whose every field (nn::config_fields()) differs from the
// default and which still validates: the smallest value above each integer's
// default-or-floor, the middle of a double's range, the last choice of each
// string, each bool flipped. Tests use it to check that every field round-trips
// and has a working flag, so a new field is checked without a new test.
#pragma once
#include <nlohmann/json.hpp>

#include "nn/config.h"

namespace tapelm::testing {

inline nn::ModelConfig changed_config() {
  nn::ModelConfig c;
  for (const nn::ConfigField& f : nn::config_fields())
    std::visit(
        [&](auto member) {
          auto& v = c.*member;
          using T = std::remove_reference_t<decltype(v)>;
          if constexpr (std::is_same_v<T, int64_t>)
            v = v == (int64_t)f.lo + 1 ? (int64_t)f.lo + 2 : (int64_t)f.lo + 1;
          else if constexpr (std::is_same_v<T, double>)
            v = (f.lo + f.hi) / 2;
          else if constexpr (std::is_same_v<T, bool>)
            v = !v;
          else
            v = f.choices.back();
        },
        f.member);
  return c;
}

// A field's value as a command-line argument (bools as true/false).
inline std::string flag_value(const nn::ModelConfig& c, const nn::ConfigField& f) {
  nlohmann::json j = nlohmann::json::parse(c.to_json())[f.key];
  return j.is_string() ? j.get<std::string>() : j.dump();
}

}  // namespace tapelm::testing
