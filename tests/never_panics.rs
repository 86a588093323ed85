//! Loading never panics, whatever the bytes: random text, and random edits of a valid file.

use std::path::Path;

use forge::config::{LoadOptions, Override, load_str};
use proptest::prelude::*;

const VALID: &str = include_str!("fixtures/valid.yaml");

fn options() -> LoadOptions {
    LoadOptions {
        check_files: false,
        ..LoadOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = load_str("fuzz.yaml", &text, Path::new("."), &options());
    }

    #[test]
    fn yaml_like_text_never_panics(text in "([a-z_]{1,8}: ?(\\[|\\{|-|\"|'|&a|\\*a|!!str|[0-9.e+-]{1,6}|[a-z]{1,5}|\\n  )){0,30}") {
        let _ = load_str("fuzz.yaml", &text, Path::new("."), &options());
    }

    #[test]
    fn edits_of_a_valid_file_never_panic(at in 0usize..VALID.len(), cut in 0usize..20, insert in "\\PC{0,12}") {
        let mut text = VALID.to_string();
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (at..=(at + cut).min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(at);
        text.replace_range(at..end, &insert);
        let _ = load_str("fuzz.yaml", &text, Path::new("."), &options());
    }

    #[test]
    fn arbitrary_overrides_never_panic(path in "[a-z_.0-9]{0,20}", value in "\\PC{0,20}") {
        if let Ok(o) = Override::parse_set(&format!("{path}={value}")) {
            let options = LoadOptions { overrides: vec![o], ..options() };
            let _ = load_str("fuzz.yaml", VALID, Path::new("."), &options);
        }
    }
}
