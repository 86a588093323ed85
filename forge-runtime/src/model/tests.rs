//! Round trips and cache consistency of the model, on the CPU backend with random weights.

use burn::backend::NdArray;
use burn::prelude::*;

use super::*;
use crate::config::Architecture;

type B = NdArray<f32>;

pub(crate) fn tiny_spec(architecture: Architecture) -> ModelSpec {
    ModelSpec {
        architecture,
        vocab_size: 37,
        hidden_size: 32,
        intermediate_size: 48,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: None,
        max_position_embeddings: 64,
        tie_word_embeddings: architecture == Architecture::Qwen3,
        attention_bias: architecture == Architecture::Qwen2,
        qk_norm: architecture == Architecture::Qwen3,
        eos_token_ids: vec![1],
        bos_token_id: None,
    }
}

fn ids(rows: &[&[i64]]) -> Tensor<B, 2, Int> {
    let s = rows[0].len();
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), s]), &Default::default())
}

fn values(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn saved_checkpoints_load_back_identically() {
    for arch in [
        Architecture::Qwen3,
        Architecture::Qwen2,
        Architecture::Llama,
    ] {
        let device = Default::default();
        B::seed(&device, 7);
        let model = CausalLm::<B>::new(&tiny_spec(arch), &device);
        let dir = tempfile::tempdir().unwrap();
        save(&model, dir.path()).unwrap();
        let loaded = load::<B>(dir.path(), &device).unwrap();
        let x = ids(&[&[3, 5, 7, 11, 13], &[2, 4, 8, 16, 32]]);
        let a = values(model.forward(x.clone()));
        let b = values(loaded.forward(x));
        assert_eq!(max_diff(&a, &b), 0.0, "{arch:?}");
        assert!(a.iter().any(|v| v.abs() > 1e-3), "logits are not trivial");
    }
}

#[test]
fn decoding_with_the_cache_matches_the_full_forward() {
    let device = Default::default();
    B::seed(&device, 3);
    let model = CausalLm::<B>::new(&tiny_spec(Architecture::Qwen3), &device);
    let seq: [i64; 7] = [4, 9, 2, 30, 17, 5, 21];
    let full = values(model.forward(ids(&[&seq])));
    let v = model.spec.vocab_size;
    let mut cache = KvCache::new(model.spec.num_layers);
    // Prefill 4 tokens, then one at a time.
    let pos = Tensor::<B, 1, Int>::arange(0..4, &device).unsqueeze::<2>();
    let bias = attention_bias::<B>(1, 4, 0, None, &device);
    let h = model.hidden(ids(&[&seq[..4]]), &pos, &bias, Some(&mut cache));
    let prefill = values(model.logits(h));
    assert!(max_diff(&prefill, &full[..4 * v]) < 1e-5);
    for t in 4..7 {
        let pos = Tensor::<B, 1, Int>::arange(t as i64..t as i64 + 1, &device).unsqueeze::<2>();
        let bias = attention_bias::<B>(1, 1, t, None, &device);
        let h = model.hidden(ids(&[&seq[t..t + 1]]), &pos, &bias, Some(&mut cache));
        let step = values(model.logits(h));
        assert!(
            max_diff(&step, &full[t * v..(t + 1) * v]) < 1e-5,
            "position {t}"
        );
    }
    assert_eq!(cache.len(), 7);
}

#[test]
fn left_padding_is_invisible() {
    // A padded row gives the same logits as the unpadded sequence.
    let device = Default::default();
    B::seed(&device, 5);
    let model = CausalLm::<B>::new(&tiny_spec(Architecture::Llama), &device);
    let seq: [i64; 3] = [6, 8, 10];
    let alone = values(model.forward(ids(&[&seq])));
    let padded_ids = ids(&[&[0, 0, 6, 8, 10]]);
    let positions =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64, 0, 0, 1, 2], [1, 5]), &device);
    let padding = [true, true, false, false, false];
    let bias = attention_bias::<B>(1, 5, 0, Some(&padding), &device);
    let h = model.hidden(padded_ids, &positions, &bias, None);
    let padded = values(model.logits(h));
    let v = model.spec.vocab_size;
    assert!(max_diff(&padded[2 * v..], &alone) < 1e-5);
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let device = Default::default();
    let model = CausalLm::<B>::new(&tiny_spec(Architecture::Qwen2), &device);
    let dir = tempfile::tempdir().unwrap();
    save(&model, dir.path()).unwrap();
    // A config that disagrees with the weights.
    let mut spec = tiny_spec(Architecture::Qwen2);
    spec.intermediate_size = 40;
    std::fs::write(dir.path().join("config.json"), spec.to_hf_json()).unwrap();
    let err = load::<B>(dir.path(), &device).unwrap_err().to_string();
    assert!(
        err.contains("mlp.gate_proj.weight") && err.contains("shape"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load::<B>(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}
