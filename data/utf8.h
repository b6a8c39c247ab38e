// UTF-8 text as code points, exactly reversible: a byte that does not start a
// valid, shortest-form sequence becomes a "stray byte" symbol past Unicode
// (kStrayByte + byte), so decoding and re-encoding give the input back for
// any bytes. Shared by the tokenizers.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tapelm::data {

inline constexpr uint32_t kStrayByte = 0x110000;  // past Unicode: "raw byte b" = kStrayByte + b

// The symbol that starts at byte i of s and its length in bytes: a code
// point of a valid, shortest-form sequence, else kStrayByte + the byte (1 byte).
struct Utf8Symbol {
  uint32_t cp;
  int bytes;
};
inline Utf8Symbol utf8_symbol_at(std::string_view s, size_t i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char c = p[i];
  if (c < 0x80) return {c, 1};
  const int len = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  uint32_t cp = len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
  bool ok = len > 0 && i + len <= s.size();
  for (int k = 1; ok && k < len; ++k) {
    ok = (p[i + k] >> 6) == 2;
    cp = (cp << 6) | (p[i + k] & 0x3f);
  }
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  ok = ok && cp >= min_cp[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
  return ok ? Utf8Symbol{cp, len} : Utf8Symbol{kStrayByte + c, 1};
}

// Decodes UTF-8 into code points (utf8_symbol_at), so re-encoding is exact.
inline std::vector<uint32_t> utf8_symbols(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Utf8Symbol y = utf8_symbol_at(s, i);
    out.push_back(y.cp);
    i += y.bytes;
  }
  return out;
}

inline void append_symbol(std::string& out, uint32_t cp) {
  if (cp >= kStrayByte) {
    out += (char)(cp - kStrayByte);
  } else if (cp < 0x80) {
    out += (char)cp;
  } else if (cp < 0x800) {
    out += (char)(0xC0 | (cp >> 6));
    out += (char)(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += (char)(0xE0 | (cp >> 12));
    out += (char)(0x80 | ((cp >> 6) & 0x3f));
    out += (char)(0x80 | (cp & 0x3f));
  } else {
    out += (char)(0xF0 | (cp >> 18));
    out += (char)(0x80 | ((cp >> 12) & 0x3f));
    out += (char)(0x80 | ((cp >> 6) & 0x3f));
    out += (char)(0x80 | (cp & 0x3f));
  }
}

}  // namespace tapelm::data
