/// The per-token inputs a loss function may name, in f64 for the reference twin.
///
/// A `#[forge::loss]` function takes any subset of these by parameter name; only `logprob`
/// carries gradient.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenInputs {
    /// Log-probability of the sampled token under the policy being trained.
    pub logprob: f64,
    /// Log-probability recorded by the generator (the behaviour policy) when it sampled the token.
    pub old_logprob: f64,
    /// Log-probability under the frozen reference model (0 when there is none).
    pub ref_logprob: f64,
    /// The episode's advantage.
    pub advantage: f64,
    /// Masked mean over the token's sequence of `logprob - old_logprob` (GSPO's sequence-level
    /// log-ratio); its gradient reaches every token of the sequence.
    pub seq_log_ratio: f64,
}

impl TokenInputs {
    /// Names a loss function's parameters may take to receive these inputs.
    pub const NAMES: &'static [&'static str] = &[
        "logprob",
        "old_logprob",
        "ref_logprob",
        "advantage",
        "seq_log_ratio",
    ];
}

/// A per-token loss value and its derivatives with respect to the inputs that carry gradient.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenGrad {
    /// The per-token loss.
    pub value: f64,
    /// d loss / d logprob of this token.
    pub d_logprob: f64,
    /// d loss / d seq_log_ratio; the runtime spreads it over the sequence's tokens.
    pub d_seq_log_ratio: f64,
}
