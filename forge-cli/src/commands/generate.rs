//! `forge generate`: sample from a checkpoint on the CPU and print tokens, text and logprobs.

use anyhow::Context as _;
use forge::generate::{CpuGenerator, GenerateRequest, SamplingParams};
use forge::tokenizer::{ChatMessage, Tokenizer};

use crate::args::GenerateArgs;
use crate::exit::ExitStatus;

pub(crate) fn exec(args: &GenerateArgs) -> anyhow::Result<ExitStatus> {
    let model = CpuGenerator::load(&args.model)?;
    let tokenizer = Tokenizer::from_dir(&args.model, None)?;
    let prompt_ids = match (&args.prompt, &args.prompt_ids) {
        (_, Some(ids)) => ids.clone(),
        (Some(text), None) if args.chat => {
            anyhow::ensure!(
                tokenizer.has_chat_template(),
                "--chat: {} has no chat template",
                args.model.display()
            );
            let rendered = tokenizer.apply_chat_template(
                &[ChatMessage::new("user", text.clone())],
                true,
                &Default::default(),
            )?;
            tokenizer.encode(&rendered, false)?
        }
        (Some(text), None) => tokenizer.encode(text, true)?,
        (None, None) => anyhow::bail!("give --prompt or --prompt-ids"),
    };
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        stop_token_ids: Vec::new(),
        stop_strings: args.stop.clone(),
        seed: args.seed,
    };
    let prompts = [prompt_ids];
    let request = GenerateRequest {
        prompts: &prompts,
        n: args.n,
        params: &params,
        seed_offset: 0,
        policy_version: 0,
    };
    let out = model.generate(&tokenizer, &request).context("generating")?;
    for (i, c) in out.into_iter().flatten().enumerate() {
        if args.json {
            println!("{}", serde_json::to_string(&c)?);
            continue;
        }
        println!(
            "--- completion {i} ({:?}, {} tokens)",
            c.stop_reason,
            c.token_ids.len()
        );
        println!("{}", c.text);
        let pieces: Vec<String> = c
            .token_ids
            .iter()
            .zip(&c.logprobs)
            .map(|(t, lp)| {
                let token = tokenizer.id_to_token(*t).unwrap_or_default();
                format!("{t}:{token:?}:{lp:.4}")
            })
            .collect();
        println!("tokens: {}", pieces.join(" "));
    }
    Ok(ExitStatus::Success)
}
