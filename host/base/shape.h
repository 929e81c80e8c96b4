// host/base/shape.h - tensor shapes and the arithmetic on them that can overflow.
#ifndef CKPTBRIDGE_HOST_BASE_SHAPE_H_
#define CKPTBRIDGE_HOST_BASE_SHAPE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "host/base/status.h"

namespace ckptbridge {

// Dimensions, outermost first (row-major / C order).
using Shape = std::vector<int64_t>;

// The product of the dims (1 for a scalar). Fails on a negative dim or when
// the product, or the product times `element_size`, would exceed 2^62: such a
// shape can only come from a corrupt or hostile header.
Result<int64_t> NumElements(const Shape& shape);
Result<int64_t> NumBytes(const Shape& shape, size_t element_size);

// The product without checks, for shapes already validated.
int64_t NumElementsUnchecked(const Shape& shape);

// "[256, 64]" (messages) or, compact, "[256,64]" (tables).
std::string ShapeString(const Shape& shape, bool compact = false);

// Row-major strides in elements.
std::vector<int64_t> RowMajorStrides(const Shape& shape);

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_SHAPE_H_
