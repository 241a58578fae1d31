// Error messages of the native operators, built without std::ostream. Included by the host code of both
// libraries (not by nvcc: it uses ATen types).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdio>
#include <string>
#include <type_traits>

namespace fastrcnn {

// Error messages are built here as one std::string, numbers formatted by std::to_string and snprintf, never
// through std::ostream (which c10::str and TORCH_CHECK's variadic messages use): on the H200 device machine
// (its own toolchain, torch 2.11), streaming an integer from inside the CUDA library crashed the process in
// libstdc++'s number formatting instead of throwing (docs/measurements.md). c10::str of one std::string
// returns it as it is, without a stream. The text is what the stream would have written ("[2, 5]", "1e+30").
namespace message_detail {
inline std::string piece(const std::string& s) { return s; }
inline std::string piece(const char* s) { return s; }
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
std::string piece(T v) {
  return std::to_string(v);
}
inline std::string piece(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
inline std::string piece(float v) { return piece(static_cast<double>(v)); }
inline std::string piece(at::ScalarType t) { return c10::toString(t); }
inline std::string piece(const c10::Device& d) { return d.str(); }
inline std::string piece(c10::IntArrayRef a) {
  std::string out = "[";
  for (size_t i = 0; i < a.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(a[i]);
  }
  return out + "]";
}
}  // namespace message_detail

// The pieces of an error message joined into one string (see above): TORCH_CHECK_VALUE(cond, message(...)).
template <typename... Args>
std::string message(const Args&... args) {
  std::string out;
  (out += ... += message_detail::piece(args));
  return out;
}

}  // namespace fastrcnn
