//! The macros' error messages (`ui/loss`, `ui/reward`: each file's expected compiler output is
//! beside it; re-bless with `TRYBUILD=overwrite`) and a custom loss and reward that compile and
//! work (`ui/pass`).

#[test]
fn macro_errors_point_at_the_offending_code() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/loss/*.rs");
    t.compile_fail("ui/reward/*.rs");
    t.pass("ui/pass/*.rs");
}
