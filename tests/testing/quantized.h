// tests/testing/quantized.h - the small configs of the quantized families
// that more than one test builds checkpoints from: DeepSeek V3 (whose FP8
// releases carry float8_e4m3fn weights with f32 weight_scale_inv block
// scales) and GPT-OSS (whose MXFP4 releases carry U8 `_blocks` of E2M1 codes
// with U8 E8M0 `_scales`).
//
// Each test keeps its own generator of tensor values and its own decoder:
// what they fill the tensors with, and what they check against, differ from
// test to test on purpose. Header-only, so every test target that includes
// "tests/testing/testing.h" can include this one too.
#ifndef CKPTBRIDGE_TESTS_TESTING_QUANTIZED_H_
#define CKPTBRIDGE_TESTS_TESTING_QUANTIZED_H_

#include <cstdint>
#include <nlohmann/json.hpp>

namespace ckptbridge::testing {

namespace deepseek {

// DeepSeek V3, small, with every dimension different so that a swapped axis
// shows: 4 layers (the first 2 dense), 6 routed experts and 1 shared, query
// LoRA, 1 MTP layer, YaRN rope scaling; bfloat16.
inline nlohmann::json TinyV3() {
  return {{"architectures", {"DeepseekV3ForCausalLM"}},
          {"model_type", "deepseek_v3"},
          {"vocab_size", 64},
          {"hidden_size", 48},
          {"intermediate_size", 56},
          {"moe_intermediate_size", 16},
          {"num_hidden_layers", 4},
          {"first_k_dense_replace", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 4},
          {"q_lora_rank", 24},
          {"kv_lora_rank", 20},
          {"qk_nope_head_dim", 8},
          {"qk_rope_head_dim", 4},
          {"v_head_dim", 6},
          {"n_routed_experts", 6},
          {"n_shared_experts", 1},
          {"num_experts_per_tok", 2},
          {"num_nextn_predict_layers", 1},
          {"moe_layer_freq", 1},
          {"topk_method", "noaux_tc"},
          {"scoring_func", "sigmoid"},
          {"n_group", 2},
          {"topk_group", 1},
          {"routed_scaling_factor", 2.5},
          {"norm_topk_prob", true},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000},
          {"max_position_embeddings", 163840},
          {"rope_scaling",
           {{"type", "yarn"},
            {"factor", 40.0},
            {"original_max_position_embeddings", 4096},
            {"beta_fast", 32.0},
            {"beta_slow", 1.0},
            {"mscale", 1.0},
            {"mscale_all_dim", 1.0}}},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

// The quantization_config of DeepSeek's FP8 releases: e4m3 weights in
// `block_rows` x `block_cols` blocks, each with its weight_scale_inv.
inline nlohmann::json Fp8QuantizationConfig(int64_t block_rows, int64_t block_cols) {
  return {{"activation_scheme", "dynamic"},
          {"fmt", "e4m3"},
          {"quant_method", "fp8"},
          {"weight_block_size", {block_rows, block_cols}}};
}

}  // namespace deepseek

namespace gptoss {

// GPT-OSS's 2-layer cycle: sliding attention, then full attention.
inline nlohmann::json LayerTypes(int64_t layers) {
  nlohmann::json types = nlohmann::json::array();
  for (int64_t i = 0; i < layers; ++i)
    types.push_back(i % 2 ? "full_attention" : "sliding_attention");
  return types;
}

// GPT-OSS-shaped and small, every dimension different: E 24, F 20, 4 query
// heads of 10 (40, not E), 1 KV head, 5 experts, vocab 40, `layers` layers
// (6 = 3 blocks of the 2-layer cycle).
inline nlohmann::json Bf16Config(int64_t layers = 6) {
  return {{"architectures", {"GptOssForCausalLM"}},
          {"model_type", "gpt_oss"},
          {"vocab_size", 40},
          {"hidden_size", 24},
          {"intermediate_size", 20},
          {"num_hidden_layers", layers},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 1},
          {"head_dim", 10},
          {"num_local_experts", 5},
          {"num_experts_per_tok", 2},
          {"experts_per_token", 2},
          {"attention_bias", true},
          {"layer_types", LayerTypes(layers)},
          {"sliding_window", 8},
          {"max_position_embeddings", 256},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 150000},
          {"rope_scaling",
           {{"beta_fast", 32.0},
            {"beta_slow", 1.0},
            {"factor", 32.0},
            {"original_max_position_embeddings", 64},
            {"rope_type", "yarn"},
            {"truncate", false}}},
          {"swiglu_limit", 7.0},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

// As the MXFP4 release writes it: quantization_config, no torch_dtype. E 64
// and F 96 are 2 and 3 MXFP4 blocks; 4 heads of 12 (48, not E), 2 KV heads,
// 3 experts, `layers` layers.
inline nlohmann::json Mxfp4Config(int64_t layers = 4) {
  nlohmann::json c = Bf16Config(layers);
  c["vocab_size"] = 48;
  c["hidden_size"] = 64;
  c["intermediate_size"] = 96;
  c["num_key_value_heads"] = 2;
  c["head_dim"] = 12;
  c["num_local_experts"] = 3;
  c.erase("torch_dtype");
  c["quantization_config"] = {
      {"modules_to_not_convert",
       {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}},
      {"quant_method", "mxfp4"}};
  return c;
}

}  // namespace gptoss

}  // namespace ckptbridge::testing

#endif  // CKPTBRIDGE_TESTS_TESTING_QUANTIZED_H_
