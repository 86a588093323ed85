//! Procedural macros of Forge. Users reach them as `#[forge::loss]` and `#[forge::reward]`
//! through the `forge` crate, which re-exports them.
//!
//! Each entry point runs parse (`args`, `model`) -> validate (errors collected in `ctx`, every one
//! spanned at the offending tokens) -> `expand`; on failure `fallback` emits the errors beside the
//! user's item, so one mistake does not cascade into unrelated errors.

use proc_macro::TokenStream;

mod args;
mod ctx;
mod expand;
mod fallback;
mod model;
mod paths;

/// Declares a per-token policy loss.
///
/// ```text
/// /// PPO-style clipped surrogate.
/// #[forge::loss(aggregation = "token_mean")]
/// pub fn ppo_clip(
///     logprob: f32,
///     old_logprob: f32,
///     advantage: f32,
///     #[param(default = 0.2, min = 0.0, max = 1.0, doc = "Clip range.")] clip: f32,
/// ) -> f32 {
///     let ratio = (logprob - old_logprob).exp();
///     -(ratio * advantage).min(ratio.clamp(1.0 - clip, 1.0 + clip) * advantage)
/// }
/// ```
/// Expands to `mod ppo_clip { Params, NAME, reference, .. }` and registers the loss under
/// `ppo_clip` (or `name = "..."`).
#[proc_macro_attribute]
pub fn loss(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::loss(args.into(), item.clone().into())
        .unwrap_or_else(|e| fallback::emit_loss(e, item.into()))
        .into()
}

/// Declares a reward function scoring one episode.
///
/// ```text
/// /// 1 when the completion contains the reference answer.
/// #[forge::reward]
/// pub fn contains_answer(completion: &str, answer: &str) -> f32 {
///     if completion.contains(answer) { 1.0 } else { 0.0 }
/// }
/// ```
/// Arguments are matched by name: `prompt`, `completion`, `answer` (`&str`), `sample`
/// (`&forge::reward::Sample`); others need `#[param(default = ..)]` and become YAML parameters.
#[proc_macro_attribute]
pub fn reward(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::reward(args.into(), item.clone().into())
        .unwrap_or_else(|e| fallback::emit(e, item.into()))
        .into()
}
