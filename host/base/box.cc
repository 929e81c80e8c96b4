#include "host/base/box.h"

#include <cstring>

namespace ckptbridge {

void CopyBox(const void* src, const Shape& src_shape, const std::vector<int64_t>& src_origin,
             void* dst, const Shape& dst_shape, const std::vector<int64_t>& dst_origin,
             const Shape& extent, size_t element_size) {
  const size_t rank = extent.size();
  for (int64_t e : extent) {
    if (e == 0) return;
  }
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  if (rank == 0) {
    std::memcpy(d, s, element_size);
    return;
  }
  const std::vector<int64_t> src_strides = RowMajorStrides(src_shape);
  const std::vector<int64_t> dst_strides = RowMajorStrides(dst_shape);
  const size_t row_bytes = static_cast<size_t>(extent[rank - 1]) * element_size;
  // Odometer over every dimension but the last.
  std::vector<int64_t> index(rank, 0);
  for (;;) {
    int64_t src_offset = 0, dst_offset = 0;
    for (size_t i = 0; i < rank; ++i) {
      src_offset += (src_origin[i] + index[i]) * src_strides[i];
      dst_offset += (dst_origin[i] + index[i]) * dst_strides[i];
    }
    std::memcpy(d + dst_offset * element_size, s + src_offset * element_size, row_bytes);
    size_t dim = rank - 1;
    for (;;) {
      if (dim == 0) return;
      --dim;
      if (++index[dim] < extent[dim]) break;
      index[dim] = 0;
    }
  }
}

}  // namespace ckptbridge
