// UTF-8 text as code points, exactly reversible: a byte that does not start a
// valid, shortest-form sequence becomes a "stray byte" symbol past Unicode
// (kStrayByte + byte), so decoding and re-encoding give the input back for
// any bytes. Shared by the tokenizers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tapelm::data {

inline constexpr uint32_t kStrayByte = 0x110000;  // past Unicode: "raw byte b" = kStrayByte + b

// Decodes UTF-8 into code points; any byte that does not start a valid,
// shortest-form sequence becomes kStrayByte + byte, so re-encoding is exact.
inline std::vector<uint32_t> utf8_symbols(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  const auto* p = (const unsigned char*)s.data();
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      ok = (p[i + k] >> 6) == 2;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= min_cp[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      out.push_back(cp);
      i += len;
    } else {
      out.push_back(kStrayByte + c);
      i += 1;
    }
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
