// host/base/box.h - copying rectangular boxes between C-order arrays.
//
// Chunked storage (zarr) and stacked tensors both come down to this: a box of
// `extent` elements per dimension, taken at `src_origin` in one array and put
// at `dst_origin` in another. Rows along the last dimension are contiguous in
// both, so the copy is a memcpy per row.
#ifndef CKPTBRIDGE_HOST_BASE_BOX_H_
#define CKPTBRIDGE_HOST_BASE_BOX_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "host/base/shape.h"

namespace ckptbridge {

// Copies the box [src_origin, src_origin + extent) of `src` (shape
// `src_shape`) to [dst_origin, dst_origin + extent) of `dst` (shape
// `dst_shape`). Elements are `element_size` bytes. The caller guarantees the
// boxes lie inside both arrays.
void CopyBox(const void* src, const Shape& src_shape, const std::vector<int64_t>& src_origin,
             void* dst, const Shape& dst_shape, const std::vector<int64_t>& dst_origin,
             const Shape& extent, size_t element_size);

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_BOX_H_
