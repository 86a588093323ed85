//! Parity with transformers on tiny random checkpoints of each architecture
//! (`scripts/make_tiny_checkpoints.py`): logits, greedy generation, tokenization, chat templates,
//! and a checkpoint saved by Forge loading back with the same logits.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::prelude::*;
use forge::generate::{GenerateRequest, SamplingParams, StopReason, generate};
use forge::model::{CausalLm, load, save};
use forge::tokenizer::{ChatMessage, Tokenizer};
use safetensors::{Dtype, SafeTensors};

type B = NdArray<f32>;

const ARCHITECTURES: [&str; 3] = ["qwen3", "qwen2", "llama"];

fn dir(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(arch)
}

struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    fn read(arch: &str) -> Self {
        Self {
            bytes: std::fs::read(dir(arch).join("expected.safetensors")).expect("fixture exists"),
        }
    }
    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<u8>, Dtype) {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid safetensors");
        let view = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("fixture lacks `{name}`: {e}"));
        (view.shape().to_vec(), view.data().to_vec(), view.dtype())
    }
    fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, data, dtype) = self.tensor(name);
        assert_eq!(dtype, Dtype::F32, "{name}");
        let values = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (shape, values)
    }
    fn i64s(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let (shape, data, dtype) = self.tensor(name);
        assert_eq!(dtype, Dtype::I64, "{name}");
        let values = data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        (shape, values)
    }
}

fn logits_of(model: &CausalLm<B>, shape: &[usize], ids: &[i64]) -> Vec<f32> {
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.to_vec(), [shape[0], shape[1]]),
        &device,
    );
    model
        .forward(ids)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_match_transformers() {
    for arch in ARCHITECTURES {
        let expected = Expected::read(arch);
        let model = load::<B>(&dir(arch), &Default::default()).expect("loads");
        let (shape, ids) = expected.i64s("input_ids");
        let (_, want) = expected.f32s("logits");
        let got = logits_of(&model, &shape, &ids);
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-4, "{arch}: max |logit difference| {diff}");
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for arch in ARCHITECTURES {
        let expected = Expected::read(arch);
        let device = Default::default();
        let model = load::<B>(&dir(arch), &device).expect("loads");
        let tokenizer = Tokenizer::from_dir(&dir(arch), None).expect("tokenizer loads");
        let (_, prompt) = expected.i64s("greedy_prompt");
        let (_, want) = expected.i64s("greedy_tokens");
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: want.len(),
            ..Default::default()
        };
        // transformers generated without stopping; so must we: no stop ids in the way.
        let prompt: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
        let mut model = model;
        model.spec.eos_token_ids.clear();
        let out = generate(
            &model,
            &without_eos(tokenizer),
            &GenerateRequest {
                prompts: &[prompt],
                n: 1,
                params: &params,
                seed_offset: 0,
                policy_version: 0,
            },
            &device,
        )
        .expect("generates");
        let got: Vec<i64> = out[0][0].token_ids.iter().map(|&t| i64::from(t)).collect();
        assert_eq!(got, want, "{arch}");
        assert_eq!(out[0][0].stop_reason, StopReason::Length);
    }
}

/// The tokenizer without end-of-sequence ids (the fixture's greedy run ignores them).
fn without_eos(tokenizer: Tokenizer) -> Tokenizer {
    Tokenizer::from_parts(tokenizer.inner().clone(), None, Default::default()).expect("builds")
}

#[test]
fn tokenization_matches_transformers() {
    for arch in ["qwen3", "llama"] {
        let tokenizer = Tokenizer::from_dir(&dir(arch), None).expect("tokenizer loads");
        let text = std::fs::read_to_string(dir(arch).join("tokenize_cases.json")).expect("exists");
        let cases: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        for case in cases.as_array().expect("a list") {
            let input = case["text"].as_str().expect("text");
            let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).expect("ids");
            assert_eq!(
                tokenizer.encode(input, false).expect("encodes"),
                ids,
                "{arch}: {input:?}"
            );
            let with: Vec<u32> =
                serde_json::from_value(case["ids_with_special_tokens"].clone()).expect("ids");
            assert_eq!(
                tokenizer.encode(input, true).expect("encodes"),
                with,
                "{arch}: {input:?}"
            );
            let decoded = case["decoded"].as_str().expect("decoded");
            assert_eq!(
                tokenizer.decode(&ids, false).expect("decodes"),
                decoded,
                "{arch}"
            );
        }
    }
}

#[test]
fn chat_templates_match_transformers() {
    for arch in ["qwen3", "llama"] {
        let tokenizer = Tokenizer::from_dir(&dir(arch), None).expect("tokenizer loads");
        let text = std::fs::read_to_string(dir(arch).join("chat_cases.json")).expect("exists");
        let cases: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        for case in cases.as_array().expect("a list") {
            let name = case["name"].as_str().expect("name");
            let messages: Vec<ChatMessage> =
                serde_json::from_value(case["messages"].clone()).expect("messages");
            let add = case["add_generation_prompt"].as_bool().expect("bool");
            let rendered = tokenizer
                .apply_chat_template(&messages, add, &Default::default())
                .expect("renders");
            assert_eq!(
                rendered,
                case["text"].as_str().expect("text"),
                "{arch}/{name}"
            );
            let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).expect("ids");
            assert_eq!(
                tokenizer.encode(&rendered, false).expect("encodes"),
                ids,
                "{arch}/{name}"
            );
        }
    }
}

#[test]
fn saved_checkpoints_give_the_same_logits() {
    for arch in ARCHITECTURES {
        let expected = Expected::read(arch);
        let device = Default::default();
        let model = load::<B>(&dir(arch), &device).expect("loads");
        let out = tempfile::tempdir().expect("temp dir");
        save(&model, out.path()).expect("saves");
        let again = load::<B>(out.path(), &device).expect("loads what it saved");
        let (shape, ids) = expected.i64s("input_ids");
        let (_, want) = expected.f32s("logits");
        let diff = max_abs_diff(&logits_of(&again, &shape, &ids), &want);
        assert!(diff <= 1e-4, "{arch}: {diff}");
    }
}
