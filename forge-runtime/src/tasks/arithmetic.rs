//! Two-number addition: `"37+48="` -> `"85"`. The CPU demo's task: its data, its character-level
//! tokenizer and the shape of its tiny Qwen3 policy, all made here from a seed.

use std::collections::BTreeSet;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::tokenizer::train_char_tokenizer;

/// Characters of the task.
pub const ALPHABET: &str = "0123456789+=";
/// Special tokens: padding and end of sequence (ids 0 and 1).
pub const SPECIAL_TOKENS: [&str; 2] = ["<pad>", "<eos>"];

/// How the task's files are made.
#[derive(Debug, Clone, PartialEq)]
pub struct ArithmeticTask {
    /// Operands are drawn from `0..=max_operand`.
    pub max_operand: u32,
    /// Prompt/completion pairs for the SFT warm-start.
    pub sft_examples: usize,
    /// Held-out prompts, never in the SFT or GRPO files.
    pub eval_prompts: usize,
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for ArithmeticTask {
    fn default() -> Self {
        Self {
            max_operand: 99,
            sft_examples: 2000,
            eval_prompts: 200,
            seed: 7,
        }
    }
}

/// `config.json` of the demo's policy: a tiny Qwen3 (q/k norms, grouped-query attention, tied
/// embeddings), the architecture of the GPU examples.
pub fn model_config() -> String {
    let vocab = SPECIAL_TOKENS.len() + ALPHABET.chars().count();
    serde_json::to_string_pretty(&serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": vocab,
        "hidden_size": 96,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 32,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "bos_token_id": null,
        "eos_token_id": 1,
        "torch_dtype": "float32"
    }))
    .expect("JSON literal")
}

/// One problem as a JSONL line.
fn line(a: u32, b: u32, with_completion: bool) -> String {
    let prompt = format!("{a}+{b}=");
    let answer = (a + b).to_string();
    let value = if with_completion {
        serde_json::json!({"prompt": prompt, "completion": answer, "answer": answer})
    } else {
        serde_json::json!({"prompt": prompt, "answer": answer})
    };
    value.to_string()
}

impl ArithmeticTask {
    /// Writes `tokenizer.json`, `tokenizer_config.json`, `config.json`, `sft.jsonl`,
    /// `train.jsonl` and `eval.jsonl` into `dir`. The same task gives the same bytes.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
        };
        let tokenizer =
            train_char_tokenizer(ALPHABET, &SPECIAL_TOKENS).map_err(|e| e.to_string())?;
        let json = tokenizer.to_string(true).map_err(|e| e.to_string())?;
        write("tokenizer.json", json + "\n")?;
        write(
            "tokenizer_config.json",
            serde_json::to_string_pretty(&serde_json::json!({
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "clean_up_tokenization_spaces": false,
                "model_max_length": 32
            }))
            .expect("JSON literal")
                + "\n",
        )?;
        write("config.json", model_config() + "\n")?;

        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut pairs: Vec<(u32, u32)> = (0..=self.max_operand)
            .flat_map(|a| (0..=self.max_operand).map(move |b| (a, b)))
            .collect();
        pairs.shuffle(&mut rng);
        let eval: Vec<(u32, u32)> = pairs.iter().take(self.eval_prompts).copied().collect();
        let held_out: BTreeSet<(u32, u32)> = eval.iter().copied().collect();
        let train: Vec<(u32, u32)> = pairs.iter().skip(self.eval_prompts).copied().collect();
        let mut sft = Vec::with_capacity(self.sft_examples);
        while sft.len() < self.sft_examples {
            let pair = train[rng.random_range(0..train.len())];
            debug_assert!(!held_out.contains(&pair));
            sft.push(pair);
        }
        let jsonl = |pairs: &[(u32, u32)], completion: bool| {
            pairs
                .iter()
                .map(|&(a, b)| line(a, b, completion) + "\n")
                .collect::<String>()
        };
        write("sft.jsonl", jsonl(&sft, true))?;
        write("train.jsonl", jsonl(&train, false))?;
        write("eval.jsonl", jsonl(&eval, false))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_prompts_are_never_trained_on() {
        let dir = tempfile::tempdir().unwrap();
        let task = ArithmeticTask {
            max_operand: 20,
            sft_examples: 50,
            eval_prompts: 30,
            seed: 1,
        };
        task.write(dir.path()).unwrap();
        let read = |name: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(dir.path().join(name))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let eval: BTreeSet<String> = read("eval.jsonl")
            .iter()
            .map(|v| v["prompt"].to_string())
            .collect();
        assert_eq!(eval.len(), 30);
        for name in ["sft.jsonl", "train.jsonl"] {
            for v in read(name) {
                assert!(!eval.contains(&v["prompt"].to_string()), "{name}: {v}");
                let p = v["prompt"].as_str().unwrap();
                let (a, b) = p.trim_end_matches('=').split_once('+').unwrap();
                let sum: u32 = a.parse::<u32>().unwrap() + b.parse::<u32>().unwrap();
                assert_eq!(v["answer"].as_str().unwrap(), sum.to_string());
            }
        }
        assert_eq!(read("train.jsonl").len(), 21 * 21 - 30);
        let tok = crate::tokenizer::Tokenizer::from_dir(dir.path(), None).unwrap();
        assert_eq!(tok.eos_token_ids(), &[1]);
        assert_eq!(
            tok.decode(&tok.encode("12+7=19", false).unwrap(), false)
                .unwrap(),
            "12+7=19"
        );
        let spec = crate::model::ModelSpec::from_dir(dir.path()).unwrap();
        assert_eq!(spec.vocab_size, tok.vocab_size());
    }
}
