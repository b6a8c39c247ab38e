// Integers read from JSON that came from a file. nlohmann::json converts a
// float to an integer with a plain cast (undefined behaviour for 1e30) and a
// number above INT64_MAX wraps; this accepts only integers that fit.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace tapelm {

// The value as an int64, or nothing if it is not an integer in int64's range.
inline std::optional<int64_t> json_int64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > (uint64_t)std::numeric_limits<int64_t>::max()) return std::nullopt;
    return (int64_t)u;
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

// The same from text (a metadata string such as a step count): nothing if the
// text is not one JSON integer that fits int64.
inline std::optional<int64_t> json_int64(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? std::nullopt : json_int64(j);
}

}  // namespace tapelm
