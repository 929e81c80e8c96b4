// host/engine/ops.h - the transform ops of a rule: shapes, inverses, kernels.
//
// Rules (host/plugin/rules.h) carry chains of ops that turn HF slices into
// MaxText slices. This file gives each op three things:
//
//   InferShapes  what the op produces from inputs of given shapes, or a
//                message naming the op and the offending shape;
//   InvertOp     the op that undoes it, given the shapes it was applied to
//                (the host derives every MaxText -> HF chain this way, so one
//                rule serves both directions);
//   kernels      the computation on f32 tensors.
//
// Arithmetic ops (Scale, Add) compute in f32 and the engine rounds once at
// the end; layout ops (everything else) move values without changing them, so
// a chain of layout ops is bit-exact in both directions for any float dtype
// that widens exactly to f32.
#ifndef CKPTBRIDGE_HOST_ENGINE_OPS_H_
#define CKPTBRIDGE_HOST_ENGINE_OPS_H_

#include <string>
#include <string_view>
#include <vector>

#include "host/base/memory_budget.h"
#include "host/base/shape.h"
#include "host/base/status.h"
#include "host/plugin/rules.h"

namespace ckptbridge::engine {

// A dense f32 tensor in C order: the engine's working representation.
struct Tensor {
  Shape shape;
  std::vector<float> data;
};

// "transpose([1, 0])", "scale(0.25)" - for messages and plans.
std::string OpName(const OpSpec& op);

// The shapes `op` produces from inputs of shapes `in`.
Result<std::vector<Shape>> InferShapes(const OpSpec& op, const std::vector<Shape>& in);

// The op undoing `op` applied to inputs of shapes `in`. Custom ops have no
// inverse (Unsupported).
Result<OpSpec> InvertOp(const OpSpec& op, const std::vector<Shape>& in);

// A chain of ops with every intermediate shape resolved.
struct ChainStep {
  OpSpec op;
  std::vector<Shape> in;
  std::vector<Shape> out;
};
struct Chain {
  std::vector<Shape> inputs;
  std::vector<Shape> outputs;
  std::vector<ChainStep> steps;
};

// Resolves `ops` applied to `inputs`. Checks the placement rules: several
// inputs need a Concat or Custom first; Split and Custom may appear only last
// and first respectively. With no ops the chain is the identity on one input.
Result<Chain> ResolveChain(const std::vector<OpSpec>& ops, const std::vector<Shape>& inputs);

// The chain that undoes `chain` (steps inverted in reverse order).
Result<Chain> InvertChain(const Chain& chain);

// Runs steps [first_step, end) of `chain` on `inputs` (which must have the
// shapes of that step's inputs). Custom steps are not run here.
Result<std::vector<Tensor>> RunChain(const Chain& chain, std::vector<Tensor> inputs,
                                     size_t first_step = 0);

// Whether `chain` only moves values: one input, one output, nothing but
// transposes and reshapes (most kernels of every family). Such a chain can
// run on the stored elements themselves when the input and output dtypes
// are the same, with no f32 round trip (RunLayoutChain).
bool IsLayoutOnly(const Chain& chain);

// Runs a layout-only chain on `bytes`, C-order elements of `element_size`
// bytes (2 or 4) shaped as the chain's input; on return they are shaped as
// its output. Bit-exact by construction. The buffers it moves through are
// ScratchBuffers, reused across units (base/memory_budget.h).
Status RunLayoutChain(const Chain& chain, size_t element_size, ScratchBuffer& bytes);
// The same from `in` (which may be a mapping of the source: it is only
// read) into `out`, without first copying `in`: the first transpose reads
// it directly.
Status RunLayoutChain(const Chain& chain, size_t element_size, std::string_view in,
                      ScratchBuffer& out);

// Kernels, exposed for tests and benchmarks. Shapes are assumed valid.
Tensor Transpose(const Tensor& in, const std::vector<int64_t>& perm);
void Scale(Tensor& t, float factor);
void AddConstant(Tensor& t, float constant);
Tensor Interleave(const Tensor& in, int axis);
Tensor Deinterleave(const Tensor& in, int axis);
Tensor Resize(const Tensor& in, int axis, int64_t size);  // pad with zeros or truncate
Tensor Concat(const std::vector<Tensor>& in, int axis);
std::vector<Tensor> Split(const Tensor& in, int axis, const std::vector<int64_t>& sizes);

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_OPS_H_
