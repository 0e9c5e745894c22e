/* test_config.c — config.json parsing: both rope dialects give the same
 * hyper-parameters, text_config wrappers, family rules, and clear errors. */
#include <stdlib.h>
#include <sys/stat.h>

#include "harness.h"
#include "model/model.h"

static const char *write_config(const char *json) { return test_write_tmp("config.json", json); }

#define BASE "\"hidden_size\": 64, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, " \
             "\"num_key_value_heads\": 2, \"intermediate_size\": 128, \"vocab_size\": 384, " \
             "\"max_position_embeddings\": 256"

TEST(llama3_rope_both_dialects_agree) {
    struct hparams a, b;
    char err[512];
    const char *legacy = "{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_theta\": 500000.0, "
                         "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 32}, "
                         "\"torch_dtype\": \"bfloat16\", \"tie_word_embeddings\": true}";
    REQUIRE(hparams_load(&a, write_config(legacy), NULL, err, sizeof err) == 0);
    const char *v5 = "{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_parameters\": {\"rope_type\": "
                     "\"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                     "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 32}, \"dtype\": \"bfloat16\"}";
    REQUIRE(hparams_load(&b, write_config(v5), NULL, err, sizeof err) == 0);
    CHECK(a.rope.type == ROPE_LLAMA3 && b.rope.type == ROPE_LLAMA3);
    CHECK(a.rope.theta == 500000.0 && b.rope.theta == 500000.0);
    CHECK(a.rope.factor == 8.0 && b.rope.factor == 8.0);
    CHECK(a.rope.orig_max_pos == 32 && b.rope.orig_max_pos == 32);
    CHECK(a.dtype == DT_BF16 && b.dtype == DT_BF16);
    CHECK(a.head_dim == 16 && a.rot_dim == 16);
    float fa[8], fb[8], af, bf;
    rope_inv_freq(&a.rope, a.rot_dim, a.max_pos, 0, fa, &af);
    rope_inv_freq(&b.rope, b.rot_dim, b.max_pos, 0, fb, &bf);
    for (int i = 0; i < 8; i++) CHECK(fa[i] == fb[i]);
    /* highest frequency (wavelength 2*pi < 32/4) is kept; the lowest is divided by 8 */
    CHECK_NEAR(fa[0], 1.0, 1e-7);
    CHECK_NEAR(fa[7], pow(500000.0, -14.0 / 16.0) / 8.0, 1e-12);
    hparams_free(&a);
    hparams_free(&b);
}

TEST(gemma3_wrapper_reads_text_config_and_layer_types) {
    struct hparams h;
    char err[512];
    const char *cfg =
        "{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"torch_dtype\": \"bfloat16\", "
        "\"text_config\": {\"hidden_size\": 64, \"num_hidden_layers\": 6, \"num_attention_heads\": 4, "
        "\"num_key_value_heads\": 1, \"head_dim\": 16, \"intermediate_size\": 128, \"vocab_size\": 384, "
        "\"sliding_window\": 8, \"query_pre_attn_scalar\": 24, \"final_logit_softcapping\": 30.0, "
        "\"rope_theta\": 1000000.0, \"rope_local_base_freq\": 10000.0, "
        "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0}, \"sliding_window_pattern\": 3}, "
        "\"vision_config\": {\"hidden_size\": 32}}";
    REQUIRE(hparams_load(&h, write_config(cfg), NULL, err, sizeof err) == 0);
    CHECK(h.family == FAM_GEMMA3);
    CHECK(h.n_layer == 6 && h.n_kv_head == 1 && h.head_dim == 16);
    CHECK(h.dtype == DT_BF16);
    CHECK(h.layer_sliding[0] && h.layer_sliding[1] && !h.layer_sliding[2] && h.layer_sliding[3] &&
          !h.layer_sliding[5]);
    CHECK(h.sliding_window == 8);
    CHECK_NEAR(h.attn_scale, 1.0 / sqrt(24.0), 1e-7);
    /* transformers' Gemma3ForConditionalGeneration ignores final_logit_softcapping */
    CHECK(h.final_softcap == 0.0f);
    CHECK(h.emb_scale == 8.0f);
    CHECK(h.norm_plus_one && h.sandwich_norms && h.qk_norm && h.act == BK_ACT_GELU_TANH);
    CHECK(h.rope.type == ROPE_LINEAR && h.rope.theta == 1e6 && h.rope.factor == 8.0);
    CHECK(h.has_rope_local && h.rope_local.type == ROPE_DEFAULT && h.rope_local.theta == 10000.0);
    hparams_free(&h);
}

TEST(gemma3_v5_rope_per_layer_type) {
    struct hparams h;
    char err[512];
    const char *cfg =
        "{\"architectures\": [\"Gemma3ForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 3, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"intermediate_size\": 128, "
        "\"vocab_size\": 384, \"sliding_window\": 8, \"layer_types\": [\"sliding_attention\", "
        "\"sliding_attention\", \"full_attention\"], \"rope_parameters\": {\"full_attention\": {\"rope_type\": "
        "\"linear\", \"factor\": 8.0, \"rope_theta\": 1000000.0}, \"sliding_attention\": {\"rope_type\": "
        "\"default\", \"rope_theta\": 10000.0}}}";
    REQUIRE(hparams_load(&h, write_config(cfg), NULL, err, sizeof err) == 0);
    CHECK(h.layer_sliding[0] && h.layer_sliding[1] && !h.layer_sliding[2]);
    CHECK(h.rope.type == ROPE_LINEAR && h.rope.theta == 1e6);
    CHECK(h.has_rope_local && h.rope_local.theta == 1e4 && h.rope_local.type == ROPE_DEFAULT);
    hparams_free(&h);
}

TEST(phi3_partial_rotary_and_longrope_both_dialects) {
    struct hparams a, b;
    char err[512];
    const char *legacy =
        "{\"architectures\": [\"Phi3ForCausalLM\"], \"hidden_size\": 128, \"num_hidden_layers\": 2, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"intermediate_size\": 128, \"vocab_size\": 384, "
        "\"max_position_embeddings\": 256, \"original_max_position_embeddings\": 32, \"partial_rotary_factor\": 0.75, "
        "\"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"longrope\", \"short_factor\": [1,1,1,1,1,1,1,1,1,1,1,1], "
        "\"long_factor\": [2,2,2,2,2,2,2,2,2,2,2,2]}}";
    REQUIRE(hparams_load(&a, write_config(legacy), NULL, err, sizeof err) == 0);
    const char *v5 =
        "{\"architectures\": [\"Phi3ForCausalLM\"], \"hidden_size\": 128, \"num_hidden_layers\": 2, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"intermediate_size\": 128, \"vocab_size\": 384, "
        "\"max_position_embeddings\": 256, \"rope_parameters\": {\"rope_type\": \"longrope\", \"rope_theta\": 10000.0, "
        "\"partial_rotary_factor\": 0.75, \"original_max_position_embeddings\": 32, "
        "\"short_factor\": [1,1,1,1,1,1,1,1,1,1,1,1], \"long_factor\": [2,2,2,2,2,2,2,2,2,2,2,2]}}";
    REQUIRE(hparams_load(&b, write_config(v5), NULL, err, sizeof err) == 0);
    CHECK(a.head_dim == 32 && a.rot_dim == 24 && b.rot_dim == 24);
    CHECK(a.rope.type == ROPE_LONGROPE && b.rope.type == ROPE_LONGROPE);
    CHECK(a.rope.orig_max_pos == 32 && b.rope.orig_max_pos == 32);
    float fs[12], fl[12], as, al;
    rope_inv_freq(&a.rope, a.rot_dim, a.max_pos, 10, fs, &as);
    rope_inv_freq(&a.rope, a.rot_dim, a.max_pos, 40, fl, &al);
    /* long factors 2 halve every frequency; attention factor sqrt(1 + ln 8 / ln 32) */
    for (int i = 0; i < 12; i++) CHECK_NEAR(fl[i], fs[i] / 2, 1e-9);
    CHECK_NEAR(as, sqrt(1 + log(8.0) / log(32.0)), 1e-6);
    hparams_free(&a);
    hparams_free(&b);
}

TEST(smollm3_no_rope_layers_and_granite_multipliers) {
    struct hparams h;
    char err[512];
    REQUIRE(hparams_load(&h, write_config("{\"architectures\": [\"SmolLM3ForCausalLM\"], " BASE
                                          ", \"no_rope_layers\": [1, 1, 1, 0]}"),
                         NULL, err, sizeof err) == 0);
    CHECK(h.layer_rope[0] && h.layer_rope[2] && !h.layer_rope[3]);
    hparams_free(&h);
    REQUIRE(hparams_load(&h, write_config("{\"architectures\": [\"GraniteForCausalLM\"], " BASE
                                          ", \"embedding_multiplier\": 12.0, \"residual_multiplier\": 0.22, "
                                          "\"attention_multiplier\": 0.0625, \"logits_scaling\": 8.0}"),
                         NULL, err, sizeof err) == 0);
    CHECK(h.emb_scale == 12.0f && h.resid_scale == 0.22f && h.attn_scale == 0.0625f && h.logit_scale == 0.125f);
    hparams_free(&h);
}

TEST(hf_overrides_merge_over_config) {
    struct hparams h;
    char err[512];
    REQUIRE(hparams_load(&h, write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE "}"),
                         "{\"architectures\": [\"MistralForCausalLM\"], \"sliding_window\": 8}", err, sizeof err) == 0);
    CHECK(strcmp(h.arch, "MistralForCausalLM") == 0);
    CHECK(h.layer_sliding[0] && h.layer_sliding[3] && h.sliding_window == 8);
    hparams_free(&h);
    CHECK(hparams_load(&h, write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE "}"), "[1]", err,
                       sizeof err) != 0);
    CHECK(strstr(err, "--hf-overrides") != NULL);
}

TEST(config_errors_are_clear) {
    struct hparams h;
    char err[512];
    CHECK(hparams_load(&h, write_config("{\"architectures\": [\"FooForCausalLM\"], " BASE "}"), NULL, err,
                       sizeof err) != 0);
    CHECK(strstr(err, "FooForCausalLM") && strstr(err, "LlamaForCausalLM"));
    CHECK(hparams_load(&h, write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ","), NULL, err,
                       sizeof err) != 0);
    CHECK(strstr(err, "config.json") && strstr(err, "invalid JSON"));
    CHECK(hparams_load(&h, write_config("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}"), NULL,
                       err, sizeof err) != 0);
    CHECK(strstr(err, "num_hidden_layers") != NULL);
    CHECK(hparams_load(&h, write_config("{\"architectures\": [\"Qwen3ForCausalLM\"], " BASE
                                        ", \"layer_types\": [\"full_attention\"]}"),
                       NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "layer_types") != NULL);
    CHECK(hparams_load(&h, write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE
                                        ", \"rope_scaling\": {\"rope_type\": \"weird\"}}"),
                       NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "weird") != NULL);
    CHECK(hparams_load(&h, write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE
                                        ", \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 0}}"),
                       NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "factor") != NULL);
    CHECK(hparams_load(&h, write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE
                                        ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, "
                                        "\"original_max_position_embeddings\": 1}}"),
                       NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "original_max_position_embeddings") != NULL);
    CHECK(hparams_load(&h, "/nonexistent/dir", NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "/nonexistent/dir/config.json") != NULL);
}

TEST_MAIN()
