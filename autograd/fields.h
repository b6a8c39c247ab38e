// A schema of a plain options struct: one row per field, naming its JSON key,
// its command-line flag, its domain (a range, or a list of choices) and its
// help. The model config (nn/config.h) and a training run's options
// (train/run_options.h) are both described this way, so the JSON round trip,
// the range checks, the flags and --help of each come from one table.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "autograd/error.h"
#include "autograd/json_int.h"

namespace tapelm {

template <class S>
struct Field {
  using Member = std::variant<int64_t S::*, double S::*, bool S::*, std::string S::*, std::vector<std::string> S::*>;
  std::string key;   // in JSON (checkpoints, --config files)
  std::string flag;  // on the command line; empty where the program sets the value itself
  Member member;
  double lo = 0, hi = 0;             // numbers: an integer in [lo, hi]; a double in [lo, hi) (NaN never is)
  std::vector<std::string> choices;  // strings: one of these (empty: any)
  std::string help;
};

// Empty if v lies in f's domain; else what is wrong, with the value
// ("must be in [1, 1024], got 0", "'words' is not one of char, byte, bpe").
template <class S, class T>
std::string domain_error(const Field<S>& f, const T& v) {
  if constexpr (std::is_same_v<T, int64_t>) {
    if (v < (int64_t)f.lo || v > (int64_t)f.hi)
      return fmt::format("must be in [{}, {}], got {}", (int64_t)f.lo, (int64_t)f.hi, v);
  } else if constexpr (std::is_same_v<T, double>) {
    if (!(v >= f.lo && v < f.hi)) return fmt::format("must be in [{}, {}), got {}", f.lo, f.hi, v);
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), v) == f.choices.end())
      return fmt::format("'{}' is not one of {}", v, fmt::join(f.choices, ", "));
  }
  return "";
}

// Throws Error naming the first field of s outside its domain: "<what>: key must be in [lo, hi], got v".
template <class S>
void check_fields(const S& s, const std::vector<Field<S>>& fields, const char* what) {
  for (const Field<S>& f : fields)
    std::visit(
        [&](auto member) {
          const std::string error = domain_error(f, s.*member);
          TAPELM_CHECK(error.empty(), "{}: {} {}", what, f.key, error);
        },
        f.member);
}

template <class S>
nlohmann::json fields_to_json(const S& s, const std::vector<Field<S>>& fields) {
  nlohmann::json j = nlohmann::json::object();
  for (const Field<S>& f : fields) std::visit([&](auto member) { j[f.key] = s.*member; }, f.member);
  return j;
}

// The fields of j (a key it lacks keeps s's value: an older file); then
// check_fields. Throws Error naming the key of a value of the wrong type.
template <class S>
void fields_from_json(S& s, const std::vector<Field<S>>& fields, const nlohmann::json& j, const char* what) {
  TAPELM_CHECK(j.is_object(), "{}: not a JSON object: {}", what, j.dump());
  for (const Field<S>& f : fields) {
    if (!j.contains(f.key)) continue;
    const nlohmann::json& v = j.at(f.key);
    const auto bad = [&] { return Error(fmt::format("{}: bad value for '{}': {}", what, f.key, v.dump())); };
    std::visit(
        [&](auto member) {
          auto& field = s.*member;
          using T = std::remove_reference_t<decltype(field)>;
          if constexpr (std::is_same_v<T, int64_t>) {
            const auto i = json_int64(v);  // not get_to: a float such as 1e30 would be cast with UB
            if (!i) throw bad();
            field = *i;
          } else {
            try {
              v.get_to(field);
            } catch (const std::exception&) {
              throw bad();
            }
          }
        },
        f.member);
  }
  check_fields(s, fields, what);
}

// The same from JSON text (a checkpoint's metadata, a file): an Error names `what` if it is not JSON.
template <class S>
S fields_from_json_text(const std::vector<Field<S>>& fields, const std::string& text, const char* what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", what, e.what()));
  }
  S s;
  fields_from_json(s, fields, j, what);
  return s;
}

}  // namespace tapelm
