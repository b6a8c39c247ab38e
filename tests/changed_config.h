// Options structs whose every field differs from the default and which still
// validate: the smallest value above each integer's default-or-floor, the middle
// of a double's range (twice the default where the range is unbounded), the last
// choice of each string (a named value for a free one), each bool flipped.
// Tests use them to check that every field of a schema (nn::config_fields,
// train::run_fields) round-trips and has a working flag, so a new field is
// checked without a new test.
#pragma once
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "nn/config.h"
#include "train/run_options.h"

namespace tapelm::testing {

// free_strings: the value of each string field that has no choices.
template <class S>
S changed_fields(const std::vector<Field<S>>& fields, const std::map<std::string, std::string>& free_strings) {
  S s;
  for (const Field<S>& f : fields)
    std::visit(
        [&](auto member) {
          auto& v = s.*member;
          using T = std::remove_reference_t<decltype(v)>;
          if constexpr (std::is_same_v<T, int64_t>)
            v = v == (int64_t)f.lo + 1 ? (int64_t)f.lo + 2 : (int64_t)f.lo + 1;
          else if constexpr (std::is_same_v<T, double>)
            v = std::isfinite(f.hi) ? (f.lo + f.hi) / 2 : 2 * v;
          else if constexpr (std::is_same_v<T, bool>)
            v = !v;
          else if constexpr (std::is_same_v<T, std::string>)
            v = f.choices.empty() ? free_strings.at(f.key) : f.choices.back();
          else
            v = {free_strings.at(f.key)};
        },
        f.member);
  return s;
}

inline nn::ModelConfig changed_config() { return changed_fields(nn::config_fields(), {{"mixer", "mamba2"}}); }

// data: the corpus the run reads.
inline train::TrainOptions changed_run(const std::string& data) {
  return changed_fields(train::run_fields(), {{"doc_sep", "%"}, {"data", data}});
}

// A field's value as a command-line argument (bools as true/false).
template <class S>
std::string flag_value(const S& s, const Field<S>& f) {
  nlohmann::json j = nlohmann::json::parse(s.to_json())[f.key];
  if (j.is_array()) j = j[0];
  return j.is_string() ? j.get<std::string>() : j.dump();
}

}  // namespace tapelm::testing
