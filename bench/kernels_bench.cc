// bench/kernels_bench - throughput of the engine's hot kernels (GB/s of input),
// with Google Benchmark.
#include <benchmark/benchmark.h>

#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "host/base/checksum.h"
#include "host/base/memory_budget.h"
#include "host/base/numeric.h"
#include "host/engine/cast_audit.h"
#include "host/engine/ops.h"

namespace {

using namespace ckptbridge;

engine::Tensor Make(Shape shape) {
  engine::Tensor t;
  t.shape = std::move(shape);
  t.data.resize(static_cast<size_t>(NumElementsUnchecked(t.shape)));
  std::iota(t.data.begin(), t.data.end(), 0.0f);
  return t;
}

void BM_Transpose2D(benchmark::State& state) {
  const int64_t n = state.range(0);
  engine::Tensor t = Make({n, n});
  for (auto _ : state) benchmark::DoNotOptimize(engine::Transpose(t, {1, 0}));
  state.SetBytesProcessed(state.iterations() * n * n * 4);
}
BENCHMARK(BM_Transpose2D)->Arg(1024)->Arg(4096);

void BM_Transpose3D(benchmark::State& state) {
  engine::Tensor t = Make({64, 512, 128});
  for (auto _ : state) benchmark::DoNotOptimize(engine::Transpose(t, {1, 0, 2}));
  state.SetBytesProcessed(state.iterations() * 64 * 512 * 128 * 4);
}
BENCHMARK(BM_Transpose3D);

// The llama query and out kernels: HF [N*D, E] viewed as [N, D, E] to
// MaxText [E, N, D], and back.
void BM_TransposeQueryKernel(benchmark::State& state) {
  const int64_t e = 2048, n = 16, d = 128;
  const bool back = state.range(0) == 1;
  engine::Tensor t = Make(back ? Shape{e, n, d} : Shape{n, d, e});
  const std::vector<int64_t> perm =
      back ? std::vector<int64_t>{1, 2, 0} : std::vector<int64_t>{2, 0, 1};
  for (auto _ : state) benchmark::DoNotOptimize(engine::Transpose(t, perm));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(t.data.size()) * 4);
}
BENCHMARK(BM_TransposeQueryKernel)->Arg(0)->Arg(1);

// The bf16 kernels as the engine moves them (RunLayoutChain: stored 16-bit
// elements, no f32 round trip): a square [n, n] transpose, and the llama
// query kernel HF [N*D, E] -> MaxText [E, N, D] (range 1: and back).
OpSpec TransposeOp(std::vector<int64_t> perm) {
  OpSpec op;
  op.kind = OpKind::kTranspose;
  op.values = std::move(perm);
  return op;
}

void BM_LayoutBf16Transpose2D(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Result<engine::Chain> chain = engine::ResolveChain({TransposeOp({1, 0})}, {Shape{n, n}});
  // Source and destination stay allocated across iterations, as a unit's
  // buffers are kept across units in a conversion: the figure is the kernel,
  // not the kernel zeroing fresh pages.
  ScratchBuffer in(static_cast<size_t>(n * n) * 2), out;
  std::memset(in.data(), 0x3f, in.size());
  for (auto _ : state) {
    benchmark::DoNotOptimize(engine::RunLayoutChain(*chain, 2, in.view(), out).ok());
  }
  state.SetBytesProcessed(state.iterations() * n * n * 2);
}
BENCHMARK(BM_LayoutBf16Transpose2D)->Arg(1024)->Arg(4096);

void BM_LayoutBf16QueryKernel(benchmark::State& state) {
  const int64_t e = 2048, n = 16, d = 128;
  const bool back = state.range(0) == 1;
  const Result<engine::Chain> chain = engine::ResolveChain(
      {TransposeOp(back ? std::vector<int64_t>{1, 2, 0} : std::vector<int64_t>{2, 0, 1})},
      {back ? Shape{e, n, d} : Shape{n, d, e}});
  ScratchBuffer in(static_cast<size_t>(e * n * d) * 2), out;
  std::memset(in.data(), 0x3f, in.size());
  for (auto _ : state) {
    benchmark::DoNotOptimize(engine::RunLayoutChain(*chain, 2, in.view(), out).ok());
  }
  state.SetBytesProcessed(state.iterations() * e * n * d * 2);
}
BENCHMARK(BM_LayoutBf16QueryKernel)->Arg(0)->Arg(1);

void BM_Interleave(benchmark::State& state) {
  engine::Tensor t = Make({4096, 32, 128});
  for (auto _ : state) benchmark::DoNotOptimize(engine::Interleave(t, 2));
  state.SetBytesProcessed(state.iterations() * 4096 * 32 * 128 * 4);
}
BENCHMARK(BM_Interleave);

void BM_Bf16ToF32(benchmark::State& state) {
  const size_t n = 1 << 24;
  std::vector<uint16_t> src(n, 0x3f80);
  std::vector<float> dst(n);
  for (auto _ : state) {
    (void)ToF32(DType::kBF16, src.data(), dst.data(), n);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * n * 2);
}
BENCHMARK(BM_Bf16ToF32);

void BM_F32ToBf16(benchmark::State& state) {
  const size_t n = 1 << 24;
  std::vector<float> src(n, 1.25f);
  std::vector<uint16_t> dst(n);
  for (auto _ : state) {
    (void)FromF32(DType::kBF16, src.data(), dst.data(), n);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_F32ToBf16);

// Values of a real weight's spread: normal, with a few outliers, so the
// audit's error maxima keep changing.
std::vector<float> Weights(size_t n) {
  std::vector<float> v(n);
  uint32_t x = 12345;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    v[i] = (static_cast<float>(x >> 8) / 16777216.0f - 0.5f) * (i % 4099 == 0 ? 300.0f : 0.1f);
  }
  return v;
}

// The cast Narrow() runs: rounding plus the cast audit in the same pass.
// Compare with BM_F32ToBf16Plain (FromF32 over the same values).
void BM_F32ToBf16Plain(benchmark::State& state) {
  const size_t n = 1 << 24;
  const std::vector<float> src = Weights(n);
  std::vector<uint16_t> dst(n);
  for (auto _ : state) {
    (void)FromF32(DType::kBF16, src.data(), dst.data(), n);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_F32ToBf16Plain);

void BM_F32ToBf16Audited(benchmark::State& state) {
  const size_t n = 1 << 24;
  const std::vector<float> src = Weights(n);
  std::vector<uint16_t> dst(n);
  for (auto _ : state) {
    engine::CastStats stats;
    (void)engine::CastFromF32(DType::kBF16, src.data(), dst.data(), n, stats);
    benchmark::DoNotOptimize(dst.data());
    benchmark::DoNotOptimize(stats);
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_F32ToBf16Audited);

void BM_F32ToF16Plain(benchmark::State& state) {
  const size_t n = 1 << 24;
  const std::vector<float> src = Weights(n);
  std::vector<uint16_t> dst(n);
  for (auto _ : state) {
    (void)FromF32(DType::kF16, src.data(), dst.data(), n);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_F32ToF16Plain);

void BM_F32ToF16Audited(benchmark::State& state) {
  const size_t n = 1 << 24;
  const std::vector<float> src = Weights(n);
  std::vector<uint16_t> dst(n);
  for (auto _ : state) {
    engine::CastStats stats;
    (void)engine::CastFromF32(DType::kF16, src.data(), dst.data(), n, stats);
    benchmark::DoNotOptimize(dst.data());
    benchmark::DoNotOptimize(stats);
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_F32ToF16Audited);

// CRC-32C of what a conversion writes (the resume journal checksums every
// chunk and tensor piece): 16 MiB, a typical chunk.
void BM_Crc32c(benchmark::State& state) {
  const std::string bytes(size_t{16} << 20, '\x5a');
  for (auto _ : state) benchmark::DoNotOptimize(ComputeCrc32c(bytes.data(), bytes.size()));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_Crc32c);

}  // namespace

BENCHMARK_MAIN();
