//! The generator against the model's own full forward pass, on the CPU backend.

use burn::backend::NdArray;
use burn::prelude::*;

use super::*;
use crate::config::Architecture;
use crate::model::{CausalLm, ModelSpec};
use crate::tokenizer::{SpecialTokens, Tokenizer, train_char_tokenizer};

type B = NdArray<f32>;

const ALPHABET: &str = "0123456789+= abcdefghij";

pub(crate) fn tokenizer() -> Tokenizer {
    let inner = train_char_tokenizer(ALPHABET, &["<pad>", "<eos>"]).unwrap();
    let special = SpecialTokens {
        eos_token: Some("<eos>".into()),
        pad_token: Some("<pad>".into()),
        ..Default::default()
    };
    Tokenizer::from_parts(inner, None, special).unwrap()
}

/// A tiny random model, its weights drawn now (burn draws a parameter at its first use
/// otherwise: clones used on other threads would each draw their own) under the lock every
/// seeded draw takes (the backend's generator is process-wide).
pub(crate) fn model(seed: u64) -> CausalLm<B> {
    let device = Default::default();
    let mut spec = crate::model::tests::tiny_spec(Architecture::Qwen3);
    spec.vocab_size = tokenizer().vocab_size();
    spec.eos_token_ids = vec![];
    let spec: ModelSpec = spec;
    let _drawing = crate::model::RANDOM_INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    B::seed(&device, seed);
    crate::model::stable_param_ids(CausalLm::new(&spec, &device))
}

fn params(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        max_new_tokens: 12,
        seed,
        ..Default::default()
    }
}

#[test]
fn recorded_logprobs_are_what_a_full_forward_recomputes() {
    let (model, tok) = (model(11), tokenizer());
    let device = Default::default();
    let prompts = vec![
        tok.encode("12+3=", false).unwrap(),
        tok.encode("a", false).unwrap(),
        tok.encode("9+9+9=", false).unwrap(),
    ];
    let p = SamplingParams {
        temperature: 0.7,
        ..params(5)
    };
    let out = generate(
        &model,
        &tok,
        &GenerateRequest {
            prompts: &prompts,
            n: 3,
            params: &p,
            seed_offset: 0,
            policy_version: 4,
        },
        &device,
    )
    .unwrap();
    assert_eq!(out.len(), 3);
    for (i, samples) in out.iter().enumerate() {
        assert_eq!(samples.len(), 3);
        for c in samples {
            assert_eq!(c.prompt_ids, prompts[i]);
            assert_eq!(c.policy_version, 4);
            assert_eq!(c.token_ids.len(), c.logprobs.len());
            // Score prompt + completion in one forward pass, at the sampling temperature.
            let seq: Vec<i64> = c
                .prompt_ids
                .iter()
                .chain(&c.token_ids)
                .map(|&t| i64::from(t))
                .collect();
            let len = seq.len();
            let ids =
                Tensor::<B, 2, Int>::from_data(TensorData::new(seq.clone(), [1, len]), &device);
            let logits: Vec<f32> = model
                .forward(ids)
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap();
            let v = model.spec.vocab_size;
            for (k, &lp) in c.logprobs.iter().enumerate() {
                let pos = c.prompt_ids.len() - 1 + k;
                let row = &logits[pos * v..(pos + 1) * v];
                let again = logprob_of(row, c.token_ids[k] as usize, 0.7);
                assert!((f64::from(lp) - again).abs() < 1e-4, "{lp} vs {again}");
            }
        }
    }
}

#[test]
fn results_are_reproducible_and_independent_of_batching() {
    let (model, tok) = (model(12), tokenizer());
    let device = Default::default();
    let prompts = vec![
        tok.encode("1+1=", false).unwrap(),
        tok.encode("bb", false).unwrap(),
    ];
    let both = generate(
        &model,
        &tok,
        &GenerateRequest {
            prompts: &prompts,
            n: 2,
            params: &params(9),
            seed_offset: 0,
            policy_version: 0,
        },
        &device,
    )
    .unwrap();
    let again = generate(
        &model,
        &tok,
        &GenerateRequest {
            prompts: &prompts,
            n: 2,
            params: &params(9),
            seed_offset: 0,
            policy_version: 0,
        },
        &device,
    )
    .unwrap();
    assert_eq!(both, again);
    // The second prompt alone, with its streams (offset 2 = 1 prompt x 2 samples), gives the same
    // tokens as in the batch.
    let alone = generate(
        &model,
        &tok,
        &GenerateRequest {
            prompts: &prompts[1..],
            n: 2,
            params: &params(9),
            seed_offset: 2,
            policy_version: 0,
        },
        &device,
    )
    .unwrap();
    for (a, b) in alone[0].iter().zip(&both[1]) {
        assert_eq!(a.token_ids, b.token_ids);
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() < 1e-4);
        }
    }
    let other = generate(
        &model,
        &tok,
        &GenerateRequest {
            prompts: &prompts,
            n: 2,
            params: &params(10),
            seed_offset: 0,
            policy_version: 0,
        },
        &device,
    )
    .unwrap();
    assert_ne!(both, other, "a different seed gives different samples");
}

#[test]
fn stops_on_eos_stop_strings_and_length() {
    let (model, tok) = (model(13), tokenizer());
    let device = Default::default();
    let prompts = vec![tok.encode("5", false).unwrap()];
    // Greedy from this random model produces some fixed text; make its second character a stop
    // string, and check the completion ends right there.
    let greedy = SamplingParams {
        temperature: 0.0,
        ..params(0)
    };
    let free = generate(
        &model,
        &tok,
        &GenerateRequest {
            prompts: &prompts,
            n: 1,
            params: &greedy,
            seed_offset: 0,
            policy_version: 0,
        },
        &device,
    )
    .unwrap();
    let first = &free[0][0];
    assert_eq!(first.stop_reason, StopReason::Length);
    assert_eq!(first.token_ids.len(), 12);
    let chars: Vec<char> = first.text.chars().collect();
    let stop: String = chars[..2].iter().collect();
    let p = SamplingParams {
        stop_strings: vec![stop.clone()],
        ..greedy.clone()
    };
    let stopped = &generate(
        &model,
        &tok,
        &GenerateRequest {
            prompts: &prompts,
            n: 1,
            params: &p,
            seed_offset: 0,
            policy_version: 0,
        },
        &device,
    )
    .unwrap()[0][0];
    assert_eq!(stopped.stop_reason, StopReason::Stop);
    assert!(stopped.text.ends_with(&stop), "{:?}", stopped.text);
    // A stop id at the greedy third token.
    let p = SamplingParams {
        stop_token_ids: vec![first.token_ids[2]],
        ..greedy
    };
    let stopped = &generate(
        &model,
        &tok,
        &GenerateRequest {
            prompts: &prompts,
            n: 1,
            params: &p,
            seed_offset: 0,
            policy_version: 0,
        },
        &device,
    )
    .unwrap()[0][0];
    let at = first
        .token_ids
        .iter()
        .position(|&t| t == first.token_ids[2])
        .unwrap();
    assert_eq!(stopped.token_ids, first.token_ids[..=at]);
    assert_eq!(stopped.stop_reason, StopReason::Stop);
}

#[test]
fn bad_prompts_are_reported() {
    let (model, tok) = (model(14), tokenizer());
    let device = Default::default();
    let err = |prompts: Vec<Vec<u32>>, max: usize| {
        let p = SamplingParams {
            max_new_tokens: max,
            ..params(0)
        };
        generate(
            &model,
            &tok,
            &GenerateRequest {
                prompts: &prompts,
                n: 1,
                params: &p,
                seed_offset: 0,
                policy_version: 0,
            },
            &device,
        )
        .unwrap_err()
        .to_string()
    };
    assert!(err(vec![vec![]], 4).contains("empty"));
    assert!(err(vec![vec![1, 999]], 4).contains("999"));
    assert!(err(vec![vec![1; 60]], 10).contains("exceeds"));
}
