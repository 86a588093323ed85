//! Collects every error of a phase, so the user sees all of them at once.

/// Error collector, after serde_derive's `Ctxt`.
#[derive(Default)]
pub(crate) struct Ctx {
    errors: Option<syn::Error>,
}

impl Ctx {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(all) => all.combine(error),
            None => self.errors = Some(error),
        }
    }

    pub(crate) fn error(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Ends the phase: the combined errors, if any.
    pub(crate) fn check(self) -> syn::Result<()> {
        self.errors.map_or(Ok(()), Err)
    }
}
