#include "host/base/shape.h"

namespace ckptbridge {
namespace {
constexpr int64_t kLimit = int64_t{1} << 62;
}

Result<int64_t> NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("negative dimension in shape " + ShapeString(shape));
    if (d != 0 && n > kLimit / d) {
      return InvalidArgument("shape " + ShapeString(shape) + " has too many elements");
    }
    n *= d;
  }
  return n;
}

Result<int64_t> NumBytes(const Shape& shape, size_t element_size) {
  CKB_ASSIGN_OR_RETURN(int64_t n, NumElements(shape));
  const auto size = static_cast<int64_t>(element_size);
  if (size != 0 && n > kLimit / size) {
    return InvalidArgument("shape " + ShapeString(shape) + " is too large");
  }
  return n * size;
}

int64_t NumElementsUnchecked(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape, bool compact) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += compact ? "," : ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::vector<int64_t> RowMajorStrides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

}  // namespace ckptbridge
