//! Math-answer rewards (GSM8K / MATH style): pull the final answer out of a completion, compare it
//! with the reference numerically, check the `<think>` format, and DAPO's overlong penalty.
//!
//! Everything here is a plain function over strings and numbers, with no regular-expression or
//! LaTeX dependencies; the accepted notations are listed on each function.

/// Deepest `\frac` nesting [`normalize_number`] follows (bounds recursion on hostile input).
const MAX_FRAC_DEPTH: usize = 8;

/// Extracts the final answer from a model completion.
///
/// Looks, in this order of preference, for
/// 1. the content of the last `\boxed{…}` that has balanced braces (nested braces allowed);
/// 2. the first non-empty line after the last `####`;
/// 3. the content of the last `<answer>…</answer>`;
/// 4. the rest of the sentence after the last "answer is" or "answer:" (any case), as in
///    "The answer is 42." or "Final Answer: The final answer is $\frac{1}{2}$. I hope…";
/// 5. the last number in the text (`-3`, `1,234.5`, `3/4`, `2e5`).
///
/// A candidate from 1–4 is trimmed of whitespace, markdown emphasis (`*`, `` ` ``) and trailing
/// periods; candidates left with nothing but whitespace and `$` are passed over. If it does not read as a number by itself
/// ([`normalize_number`]), it is narrowed:
/// * `x = 5`, `5 * 3 = 15`: the text after the last `=`, if that (narrowed again) is a number
///   (`y = 2x + 1` is kept whole);
/// * from `####`, `<answer>` and the "answer is" phrase, prose after a leading number is dropped:
///   `72 clips` → `72`, `$18 per hour` → `18`;
/// * in `\boxed{}`, a single number followed by units is narrowed (`12 \text{ apples}` → `12`),
///   but not lists (`\boxed{2, 3}` stays `2, 3`).
///
/// Otherwise the candidate is returned as it is (`\boxed{\text{(B)}}` → `\text{(B)}`).
pub fn extract_answer(text: &str) -> Option<String> {
    last_boxed(text)
        .and_then(|c| refine(c, false))
        .or_else(|| after_last_marker(text).and_then(|c| refine(c, true)))
        .or_else(|| last_answer_tag(text).and_then(|c| refine(c, true)))
        .or_else(|| answer_phrase(text).and_then(|c| refine(c, true)))
        .or_else(|| {
            number_spans(text)
                .last()
                .map(|&(a, b)| text[a..b].to_string())
        })
}

/// Reads a number written in the usual plain-text and LaTeX ways; `None` if `s` is not one.
///
/// Accepted, around an optional sign (`-`, `+`, or `−` U+2212):
/// * integers and decimals, with commas only as thousands separators (`1,234,567.5`; `1,23` is
///   rejected), optional exponent (`2.5e-3`), leading or trailing decimal point (`.5`, `5.`);
/// * fractions `a/b`, `\frac{a}{b}`, `\dfrac{a}{b}`, `\tfrac{a}{b}` and `\frac12`, where `a` and
///   `b` are numbers themselves (`\frac{-3}{4}`, `\frac{1,000}{4}`, nested `\frac` up to 8 deep);
///   a zero denominator gives `None`;
/// * decorations that are dropped: `$` and `\$` anywhere, one trailing `%` or `\%` (the number
///   is *not* divided by 100: `50%` reads as 50), trailing periods, surrounding whitespace and
///   braces, and the LaTeX spacing commands `\,` `\!` `\;` `\ ` (`1\,000` is 1000).
///
/// Trailing zeros do not matter since the value is an `f64` (`3.50` and `3.5` both give 3.5).
/// Infinite or NaN results (`1e999`, `inf`) give `None`.
pub fn normalize_number(s: &str) -> Option<f64> {
    let mut t = s.replace('\u{2212}', "-");
    for pat in ["\\$", "$", "\\,", "\\!", "\\;", "\\ "] {
        t = t.replace(pat, "");
    }
    let mut t = t.trim();
    t = t.trim_end_matches('.').trim_end();
    if let Some(rest) = t.strip_suffix("\\%").or_else(|| t.strip_suffix('%')) {
        t = rest.trim_end().trim_end_matches('.').trim_end();
    }
    parse_value(t, 0).filter(|v| v.is_finite())
}

/// Whether the completion's final answer ([`extract_answer`]) equals the reference answer.
///
/// `reference` is either a GSM8K answer field, whose final answer is the first non-empty line
/// after its last `####` ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"), a text
/// whose answer is in its last `\boxed{}`, or a bare answer ("72", "\frac{1}{2}").
///
/// When both answers read as numbers ([`normalize_number`]) they match if they differ by at most
/// 1e-6 relative to the larger magnitude (so `\frac{1}{2}` matches `0.5`, `1,000` matches `1000`,
/// `$18.00` matches `18`, `0.3333333` matches `1/3`) — except that two whole numbers must be
/// equal, so that `1000001` does not match `1000000` (a relative tolerance alone would accept
/// any integer within one per million of the reference). Otherwise they are compared as strings after trimming, dropping `$`
/// and collapsing runs of whitespace to one space (case-sensitive). No answer in the completion,
/// or an empty reference answer, is no match.
pub fn answers_match(completion: &str, reference: &str) -> bool {
    let Some(got) = extract_answer(completion) else {
        return false;
    };
    let want = reference_answer(reference);
    match (normalize_number(&got), normalize_number(want)) {
        (Some(a), Some(b)) => numbers_match(a, b),
        _ => {
            let want = collapse_text(want);
            !want.is_empty() && collapse_text(&got) == want
        }
    }
}

/// Whether `text` has the reasoning format `<think>reasoning</think>answer`.
///
/// The exact rule: after leading whitespace, `text` starts with `<think>`; `<think>` and
/// `</think>` each occur exactly once in the whole text (so no nested or second block, and no
/// unclosed block); and the text after `</think>` contains something other than whitespace. The
/// reasoning itself may be empty, and the answer is not otherwise checked.
///
/// Note that chat templates that open the `<think>` block in the prompt (DeepSeek-R1's, for one)
/// produce completions without it; prepend `<think>` before calling this for those.
pub fn think_format_ok(text: &str) -> bool {
    text.trim_start().starts_with("<think>")
        && text.matches("<think>").count() == 1
        && text.matches("</think>").count() == 1
        && text
            .split_once("</think>")
            .is_some_and(|(_, answer)| !answer.trim().is_empty())
}

/// DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, eq. 13), a reward added to
/// the task reward:
///
/// ```text
/// 0                              if len <= max - buffer
/// ((max - buffer) - len) / buffer   if max - buffer < len <= max
/// -1                             if len > max
/// ```
///
/// with `len = completion_tokens`, `max = max_tokens` (L_max) and `buffer` (L_cache). The
/// penalty falls linearly from 0 to -1 across the last `buffer` tokens. With `buffer == 0` it is
/// 0 up to `max_tokens` and -1 beyond; with `buffer > max_tokens` the formula is applied as
/// written (so even short completions get a small penalty). Always in `[-1, 0]`.
pub fn overlong_penalty(completion_tokens: usize, max_tokens: usize, buffer: usize) -> f32 {
    if completion_tokens > max_tokens {
        return -1.0;
    }
    // f64 holds every usize a completion length can be exactly.
    let (len, max, buffer) = (completion_tokens as f64, max_tokens as f64, buffer as f64);
    let threshold = max - buffer;
    if len <= threshold {
        0.0
    } else {
        ((threshold - len) / buffer).clamp(-1.0, 0.0) as f32
    }
}

// ---------------------------------------------------------------------------------------------
// Extraction helpers.

/// The content of the last `\boxed{…}` whose braces balance (an unclosed one, as in a truncated
/// completion, is passed over in favour of an earlier one).
fn last_boxed(text: &str) -> Option<&str> {
    const OPEN: &str = "\\boxed{";
    let mut end = text.len();
    while let Some(start) = text[..end].rfind(OPEN) {
        let body = start + OPEN.len();
        if let Some(len) = balanced_len(&text[body..]) {
            return Some(&text[body..body + len]);
        }
        end = start;
    }
    None
}

/// Length of the text before the `}` that closes an already-open `{`, if there is one.
fn balanced_len(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The first non-empty line after the last `####`.
fn after_last_marker(text: &str) -> Option<&str> {
    let (_, tail) = text.rsplit_once("####")?;
    tail.lines().map(str::trim).find(|l| !l.is_empty())
}

/// The content of the last `<answer>…</answer>`.
fn last_answer_tag(text: &str) -> Option<&str> {
    let close = text.rfind("</answer>")?;
    let open = text[..close].rfind("<answer>")?;
    Some(&text[open + "<answer>".len()..close])
}

/// The rest of the sentence after the last "answer is" / "answer:" (ASCII case-insensitive).
fn answer_phrase(text: &str) -> Option<&str> {
    // ASCII lowercasing keeps byte offsets, so positions carry over to `text`.
    let lower = text.to_ascii_lowercase();
    let start = ["answer is", "answer:"]
        .iter()
        .filter_map(|p| lower.rfind(p).map(|i| i + p.len()))
        .max()?;
    let rest = text[start..].trim_start_matches(|c: char| c == ':' || c.is_whitespace());
    let line = rest.lines().next().unwrap_or("");
    // The sentence ends at a period followed by whitespace (a decimal point is followed by a
    // digit); a final period is removed by `refine`.
    let end = line
        .char_indices()
        .find(|&(i, c)| c == '.' && line[i + 1..].starts_with(char::is_whitespace))
        .map_or(line.len(), |(i, _)| i);
    Some(&line[..end])
}

/// Trims a candidate and narrows it to its number where that is clear (see [`extract_answer`]).
fn refine(candidate: &str, prose: bool) -> Option<String> {
    let c = clean(candidate);
    if collapse_text(c).is_empty() {
        return None; // nothing but whitespace and `$`
    }
    if normalize_number(c).is_some() {
        return Some(c.to_string());
    }
    if let Some((_, rhs)) = c.rsplit_once('=')
        && let Some(r) = refine(rhs, prose)
        && normalize_number(&r).is_some()
    {
        return Some(r);
    }
    let spans = number_spans(c);
    if let Some(&(a, b)) = spans.first() {
        let lead = c[..a].trim_end_matches(['$', '\\', ' ', '(']);
        if lead.is_empty() && (prose || spans.len() == 1) {
            return Some(c[a..b].to_string());
        }
    }
    Some(c.to_string())
}

/// Strips whitespace, markdown emphasis / code marks and trailing periods from both ends.
fn clean(s: &str) -> &str {
    let mut s = s;
    loop {
        let t = s
            .trim()
            .trim_matches(|c| c == '*' || c == '`')
            .trim_end_matches('.');
        if t.len() == s.len() {
            return t;
        }
        s = t;
    }
}

/// Byte ranges of the numbers in `text`, in order: an optional `-` (when not preceded by a
/// letter, digit or `)`, so `3-5` is 3 and 5), digits with optional `,ddd` groups, an optional
/// decimal part, exponent (`e-3`, not followed by a letter) or `/digits` denominator.
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let digits_from = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts_fraction = b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        if !b[i].is_ascii_digit() && !starts_fraction {
            i += 1;
            continue;
        }
        let mut start = i;
        if start > 0 && b[start - 1] == b'-' {
            let before = start.checked_sub(2).map(|j| b[j]);
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b')') {
                start -= 1;
            }
        }
        let mut end = digits_from(i);
        if !starts_fraction && end - i <= 3 {
            // Thousands groups: `,ddd` not followed by another digit.
            while end < b.len() && b[end] == b',' && digits_from(end + 1) == end + 4 {
                end += 4;
            }
        }
        let mut decimal = starts_fraction;
        if !starts_fraction
            && b.get(end) == Some(&b'.')
            && b.get(end + 1).is_some_and(u8::is_ascii_digit)
        {
            end = digits_from(end + 1);
            decimal = true;
        }
        if starts_fraction {
            end = digits_from(i + 1);
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let mut j = end + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            let k = digits_from(j);
            if k > j && !b.get(k).is_some_and(u8::is_ascii_alphabetic) {
                end = k;
                decimal = true;
            }
        }
        if !decimal && b.get(end) == Some(&b'/') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end = digits_from(end + 1);
        }
        spans.push((start, end));
        i = end;
    }
    spans
}

/// The reference's final answer: after its last `####`, else in its last `\boxed{}`, else all of
/// it, trimmed.
fn reference_answer(reference: &str) -> &str {
    after_last_marker(reference)
        .or_else(|| last_boxed(reference))
        .unwrap_or(reference)
        .trim()
}

/// Equal within 1e-6 relative, except that two integers must be equal (see [`answers_match`]).
fn numbers_match(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    let both_integers = a.fract() == 0.0 && b.fract() == 0.0;
    !both_integers && (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

/// Drops `$`, trims and collapses whitespace runs to single spaces.
fn collapse_text(s: &str) -> String {
    s.replace('$', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Number parsing helpers.

/// A signed number, fraction or `\frac` (decorations already removed).
fn parse_value(s: &str, depth: usize) -> Option<f64> {
    if depth > MAX_FRAC_DEPTH {
        return None;
    }
    let s = strip_braces(s.trim());
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, s[1..].trim_start()),
        Some(b'+') => (false, s[1..].trim_start()),
        _ => (false, s),
    };
    let body = strip_braces(body);
    let value = if let Some(rest) = ["\\frac", "\\dfrac", "\\tfrac"]
        .iter()
        .find_map(|cmd| body.strip_prefix(cmd))
    {
        let (num, rest) = latex_arg(rest)?;
        let (den, rest) = latex_arg(rest)?;
        if !rest.trim().is_empty() {
            return None;
        }
        divide(parse_value(num, depth + 1)?, parse_value(den, depth + 1)?)?
    } else if let Some((num, den)) = body.split_once('/') {
        if den.contains('/') {
            return None;
        }
        divide(parse_value(num, depth + 1)?, parse_value(den, depth + 1)?)?
    } else {
        parse_plain(body)?
    };
    Some(if negative { -value } else { value })
}

fn divide(num: f64, den: f64) -> Option<f64> {
    (den != 0.0).then(|| num / den)
}

/// Removes braces that enclose the whole string (`{{3}}` → `3`, but not `{1}{2}`).
fn strip_braces(mut s: &str) -> &str {
    while s.starts_with('{') && balanced_len(&s[1..]).is_some_and(|n| n + 2 == s.len()) {
        s = s[1..s.len() - 1].trim();
    }
    s
}

/// One LaTeX macro argument: `{…}` with balanced braces, or a single character (`\frac12`).
fn latex_arg(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        let len = balanced_len(inner)?;
        Some((&inner[..len], &inner[len + 1..]))
    } else {
        let c = s.chars().next()?;
        Some(s.split_at(c.len_utf8()))
    }
}

/// An unsigned decimal with optional thousands commas and exponent.
fn parse_plain(s: &str) -> Option<f64> {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(frac) {
        return None;
    }
    let mut groups = int.split(',');
    let first = groups.next().unwrap_or("");
    let grouped = int.contains(',');
    if !all_digits(first) || (grouped && !(1..=3).contains(&first.len())) {
        return None;
    }
    if groups.any(|g| g.len() != 3 || !all_digits(g)) {
        return None;
    }
    let mut clean = if int.is_empty() {
        "0".to_string()
    } else {
        int.replace(',', "")
    };
    if !frac.is_empty() {
        clean.push('.');
        clean.push_str(frac);
    }
    if let Some(e) = exponent {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        if digits.is_empty() || !all_digits(digits) {
            return None;
        }
        clean.push('e');
        clean.push_str(e);
    }
    clean.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic pseudo-random numbers without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len() as u64) as usize]
        }
    }

    /// `n` with `,` thousands separators.
    fn with_commas(n: u64) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    fn ex(text: &str) -> Option<String> {
        extract_answer(text)
    }

    // ---- extract_answer ----

    #[test]
    fn boxed_is_preferred_and_last_wins() {
        assert_eq!(ex("#### 3\nso \\boxed{5}").as_deref(), Some("5"));
        assert_eq!(ex("\\boxed{1} then \\boxed{2}").as_deref(), Some("2"));
        assert_eq!(
            ex("The answer is 7. \\boxed{\\frac{1}{2}}").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            ex("$\\boxed{\\dfrac{3}{4}}$.").as_deref(),
            Some("\\dfrac{3}{4}")
        );
        assert_eq!(ex("\\boxed{{a}{b{c}}}").as_deref(), Some("{a}{b{c}}"));
        assert_eq!(ex("\\boxed{ 12 \\text{ apples} }").as_deref(), Some("12"));
        assert_eq!(ex("\\boxed{2, 3}").as_deref(), Some("2, 3"));
        assert_eq!(ex("\\boxed{x = -4}").as_deref(), Some("-4"));
        assert_eq!(ex("\\boxed{y = 2x + 1}").as_deref(), Some("y = 2x + 1"));
        assert_eq!(ex("\\boxed{x = }").as_deref(), Some("x ="));
        assert_eq!(ex("\\boxed{\\text{(B)}}").as_deref(), Some("\\text{(B)}"));
    }

    #[test]
    fn unclosed_or_empty_boxed_falls_back() {
        // Truncated completion: the last \boxed is unclosed, an earlier one is used.
        assert_eq!(
            ex("\\boxed{4} wait, actually \\boxed{\\frac{5}{").as_deref(),
            Some("4")
        );
        assert_eq!(ex("only \\boxed{3 + {4} and then 9").as_deref(), Some("9"));
        assert_eq!(ex("\\boxed{} #### 8").as_deref(), Some("8"));
        assert_eq!(ex("\\boxed{ ** } the answer is 6").as_deref(), Some("6"));
    }

    #[test]
    fn gsm8k_marker() {
        let gsm = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72";
        assert_eq!(ex(gsm).as_deref(), Some("72"));
        assert_eq!(ex("#### 1 #### 2\n").as_deref(), Some("2"));
        assert_eq!(
            ex("####\n\n  $1,234.50  \nThanks!").as_deref(),
            Some("$1,234.50")
        );
        assert_eq!(ex("#### 72 clips").as_deref(), Some("72"));
        assert_eq!(ex("#### **-3**").as_deref(), Some("-3"));
        // Nothing after the marker: later rules apply.
        assert_eq!(ex("<answer>5</answer> ####   ").as_deref(), Some("5"));
    }

    #[test]
    fn answer_tags() {
        assert_eq!(
            ex("<think>maybe 3</think><answer> 42 </answer>").as_deref(),
            Some("42")
        );
        assert_eq!(
            ex("<answer>1</answer> no, <answer>2</answer>").as_deref(),
            Some("2")
        );
        assert_eq!(ex("<answer>x = 5</answer>").as_deref(), Some("5"));
        assert_eq!(ex("<answer>5 * 3 = 15</answer>").as_deref(), Some("15"));
        assert_eq!(ex("<answer>Paris</answer> 12").as_deref(), Some("Paris"));
        // An unclosed tag is not an answer tag.
        assert_eq!(ex("<answer>7 and then 8").as_deref(), Some("8"));
    }

    #[test]
    fn answer_phrase_variants() {
        assert_eq!(ex("So the answer is 18.").as_deref(), Some("18"));
        assert_eq!(ex("The answer is $18.00. Done").as_deref(), Some("$18.00"));
        assert_eq!(ex("THE ANSWER IS: 3.5.\nok 9").as_deref(), Some("3.5"));
        assert_eq!(
            ex("the final answer is **42** apples").as_deref(),
            Some("42")
        );
        assert_eq!(
            ex("The answer is 5, since 2 + 3 = 5.").as_deref(),
            Some("5")
        );
        assert_eq!(
            ex("The answer is 12 because 3 times 4").as_deref(),
            Some("12")
        );
        assert_eq!(ex("The answer is B.").as_deref(), Some("B"));
        assert_eq!(ex("Answer: -7").as_deref(), Some("-7"));
        assert_eq!(
            ex("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.")
                .as_deref(),
            Some("$\\frac{1}{2}$")
        );
        // The last phrase wins; an empty one falls through to the last number.
        assert_eq!(
            ex("answer is 1. Hmm, the answer is 2").as_deref(),
            Some("2")
        );
        assert_eq!(ex("I got 10 so the answer is").as_deref(), Some("10"));
    }

    #[test]
    fn last_number_fallback() {
        assert_eq!(
            ex("She has 3 apples and buys 4 more, so 7").as_deref(),
            Some("7")
        );
        assert_eq!(
            ex("It costs 1,234,567.89 dollars.").as_deref(),
            Some("1,234,567.89")
        );
        assert_eq!(
            ex("temperature dropped to -5 degrees").as_deref(),
            Some("-5")
        );
        assert_eq!(ex("pages 3-5").as_deref(), Some("5"));
        assert_eq!(ex("x-5").as_deref(), Some("5"));
        assert_eq!(ex("(-2)").as_deref(), Some("-2"));
        assert_eq!(ex("she ate 3/4 of it").as_deref(), Some("3/4"));
        assert_eq!(ex("list 1,2,3").as_deref(), Some("3"));
        assert_eq!(ex("12,34").as_deref(), Some("34"));
        assert_eq!(ex("1234,567").as_deref(), Some("567"));
        assert_eq!(ex("rate 2.5e-3 per s").as_deref(), Some("2.5e-3"));
        assert_eq!(ex("3 eggs").as_deref(), Some("3"));
        assert_eq!(ex("about .5 of it").as_deref(), Some(".5"));
        assert_eq!(ex("it is 5.").as_deref(), Some("5"));
        assert_eq!(ex("no numbers here"), None);
        assert_eq!(ex(""), None);
    }

    #[test]
    fn random_answers_survive_filler() {
        let mut rng = Rng(0xC0FFEE);
        let fillers = [
            "Let me think step by step.",
            "First we add 3 and 4 to get 7.",
            "Then multiply by 2: 14.",
            "Hmm, 5 - 2 = 3, so",
            "That leaves 10/2 = 5 items.",
            "",
        ];
        for _ in 0..500 {
            let n = rng.below(10_000_000);
            let neg = rng.below(4) == 0;
            let value = if neg { -(n as f64) } else { n as f64 };
            let written = format!("{}{}", if neg { "-" } else { "" }, with_commas(n));
            let before = format!("{} {}", rng.pick(&fillers), rng.pick(&fillers));
            let text = match rng.below(5) {
                0 => format!("{before} So \\boxed{{{written}}}."),
                1 => format!("{before}\n#### {written}"),
                2 => format!("<think>{before}</think><answer>{written}</answer>"),
                3 => format!("{before} The answer is {written}."),
                _ => format!("{before} In total: {written}"),
            };
            let got = extract_answer(&text).unwrap_or_else(|| panic!("no answer in {text:?}"));
            assert_eq!(normalize_number(&got), Some(value), "{text:?} gave {got:?}");
            assert!(
                answers_match(&text, &format!("...\n#### {value}")),
                "{text:?}"
            );
            assert!(
                !answers_match(&text, &format!("{}", value + 1.0)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn random_junk_never_panics() {
        let mut rng = Rng(0xDEAD_BEEF);
        let pieces = [
            "\\boxed{",
            "{",
            "}",
            "####",
            "<answer>",
            "</answer>",
            "answer is",
            "Answer:",
            "\\frac",
            "\\dfrac",
            "$",
            "\\$",
            "%",
            "-",
            "+",
            ",",
            ".",
            "/",
            "=",
            " ",
            "\n",
            "1",
            "23",
            "456",
            "e",
            "é",
            "−",
            "日本",
            "*",
            "<think>",
            "</think>",
            "\\",
            "\\,",
        ];
        for _ in 0..20_000 {
            let n = rng.below(12) as usize;
            let text: String = (0..n).map(|_| rng.pick(&pieces)).collect();
            let got = extract_answer(&text);
            if let Some(g) = &got {
                assert!(!g.trim().is_empty(), "{text:?} gave an empty answer");
            }
            if let Some(v) = normalize_number(&text) {
                assert!(v.is_finite(), "{text:?}");
            }
            let reference = (0..rng.below(4))
                .map(|_| rng.pick(&pieces))
                .collect::<String>();
            // A completion matches its own extracted answer used as a bare reference (unless
            // that answer has a `####` or `\\boxed{` of its own, which the reference reader
            // would look inside).
            if let Some(g) = got {
                assert!(
                    answers_match(&text, &g) || g.contains("####") || g.contains("\\boxed{"),
                    "{text:?} / {g:?}"
                );
            }
            let _ = answers_match(&text, &reference);
            let _ = think_format_ok(&text);
        }
    }

    // ---- normalize_number ----

    #[test]
    fn normalize_number_accepts() {
        let cases: &[(&str, f64)] = &[
            ("42", 42.0),
            ("  42  ", 42.0),
            ("1,234", 1234.0),
            ("1,234,567.25", 1_234_567.25),
            ("$1,000", 1000.0),
            ("\\$18.00", 18.0),
            ("$18.00", 18.0),
            ("18.", 18.0),
            ("3.5.", 3.5),
            ("5.", 5.0),
            ("3.50", 3.5),
            ("3.5000", 3.5),
            ("50%", 50.0),
            ("12.5\\%", 12.5),
            ("50 %.", 50.0),
            ("-7", -7.0),
            ("- 7", -7.0),
            ("+7", 7.0),
            ("\u{2212}7", -7.0),
            ("-1,000", -1000.0),
            (".5", 0.5),
            ("0.0", 0.0),
            ("-0", 0.0),
            ("3/4", 0.75),
            ("-3/4", -0.75),
            ("1,000/8", 125.0),
            ("\\frac{3}{4}", 0.75),
            ("\\dfrac{3}{4}", 0.75),
            ("\\tfrac{1}{8}", 0.125),
            ("\\frac12", 0.5),
            ("\\frac{-3}{4}", -0.75),
            ("-\\frac{3}{4}", -0.75),
            ("\\frac{\\frac{1}{2}}{4}", 0.125),
            ("$\\frac{1}{2}$", 0.5),
            ("{\\frac{ 1 }{ 2 }}", 0.5),
            ("{{7}}", 7.0),
            ("{ {-7} }", -7.0),
            ("2.5e-3", 0.0025),
            ("1E3", 1000.0),
            ("1\\,000", 1000.0),
        ];
        for &(s, want) in cases {
            assert_eq!(normalize_number(s), Some(want), "{s:?}");
        }
    }

    #[test]
    fn normalize_number_rejects() {
        for s in [
            "",
            " ",
            "$",
            ".",
            "-",
            "+",
            "abc",
            "1,23",
            "1,2345",
            "12,345,67",
            ",123",
            "1,,000",
            "1.2.3",
            "1e",
            "e5",
            "1e+",
            "inf",
            "NaN",
            "infinity",
            "1e999",
            "3/0",
            "\\frac{1}{0}",
            "\\frac{1}",
            "\\frac{1}{2}3",
            "1/2/3",
            "0x10",
            "5 apples",
            "1 000",
            "1..5",
            "{",
            "}",
            "{}",
            "{1}{2}",
            "-{",
            "\\frac{",
            "\\frac",
            "--5",
            "(5)",
            "50%%",
            "5 / 0.0",
        ] {
            assert_eq!(normalize_number(s), None, "{s:?}");
        }
    }

    #[test]
    fn deep_frac_nesting_is_bounded() {
        let mut s = "1".to_string();
        for _ in 0..5_000 {
            s = format!("\\frac{{{s}}}{{1}}");
        }
        assert_eq!(normalize_number(&s), None);
        let mut s = "3".to_string();
        for _ in 0..MAX_FRAC_DEPTH {
            s = format!("\\frac{{{s}}}{{1}}");
        }
        assert_eq!(normalize_number(&s), Some(3.0));
    }

    #[test]
    fn normalize_number_random_round_trip() {
        let mut rng = Rng(12345);
        for _ in 0..2_000 {
            let int = rng.below(1_000_000_000);
            let cents = rng.below(100);
            let neg = rng.below(3) == 0;
            let value = (int as f64 + cents as f64 / 100.0) * if neg { -1.0 } else { 1.0 };
            let sign = if neg { "-" } else { rng.pick(&["", "+"]) };
            let mut digits = if rng.below(2) == 0 {
                with_commas(int)
            } else {
                int.to_string()
            };
            if cents > 0 || rng.below(2) == 0 {
                digits = format!("{digits}.{cents:02}");
                if rng.below(2) == 0 {
                    digits.push('0'); // trailing zero
                }
            }
            let s = match rng.below(4) {
                0 => format!("{sign}{digits}"),
                1 => format!("{sign}${digits}"),
                2 => format!("${sign}{digits}."),
                _ => format!(" {sign}{digits}% "),
            };
            let got = normalize_number(&s).unwrap_or_else(|| panic!("{s:?} did not parse"));
            assert!(
                (got - value).abs() <= 1e-9 * value.abs().max(1.0),
                "{s:?}: {got} vs {value}"
            );
        }
    }

    #[test]
    fn random_fractions_match_decimals() {
        let mut rng = Rng(777);
        for _ in 0..1_000 {
            let num = rng.below(2_000) as i64 - 1_000;
            let den = rng.below(999) as i64 + 1;
            let value = num as f64 / den as f64;
            let forms = [
                format!("{num}/{den}"),
                format!("\\frac{{{num}}}{{{den}}}"),
                format!("\\dfrac{{{num}}}{{{den}}}"),
                format!("${num}/{den}$"),
            ];
            for f in &forms {
                assert_eq!(normalize_number(f), Some(value), "{f:?}");
                assert!(
                    answers_match(&format!("\\boxed{{{f}}}"), &format!("{value:.12}")),
                    "{f}"
                );
                // Off by more than the tolerance: no match.
                let off = value + 1e-3 * value.abs().max(1.0);
                assert!(
                    !answers_match(&format!("\\boxed{{{f}}}"), &format!("{off}")),
                    "{f}"
                );
            }
        }
    }

    // ---- answers_match ----

    #[test]
    fn answers_match_examples_from_brief() {
        let gsm_ref = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72";
        assert!(answers_match("24 in May, 48 in April, total 72.", gsm_ref));
        assert!(answers_match("The answer is 72", gsm_ref));
        assert!(!answers_match("The answer is 24", gsm_ref));
        assert!(answers_match("\\boxed{\\frac{1}{2}}", "0.5"));
        assert!(answers_match("so it is 0.5", "\\frac{1}{2}"));
        assert!(answers_match("#### 1,000", "1000"));
        assert!(answers_match("The answer is 1000.", "...\n#### 1,000"));
        assert!(answers_match("The answer is $18.00.", "18"));
        assert!(answers_match("\\boxed{\\$18}", "#### 18"));
        assert!(answers_match("She pays $18.00 in total", "18"));
        assert!(!answers_match("She pays $18.01 in total", "18"));
        assert!(answers_match("#### -3", "-3.0"));
        assert!(answers_match("\\boxed{50\\%}", "50"));
    }

    #[test]
    fn answers_match_tolerance_is_relative() {
        assert!(answers_match("\\boxed{1000000.5}", "1000000"));
        assert!(!answers_match("\\boxed{1000000.5}", "1000002"));
        // Whole numbers must be equal, however large.
        assert!(!answers_match("\\boxed{1000001}", "1000000"));
        assert!(!answers_match("\\boxed{123456789}", "123456788"));
        assert!(answers_match("\\boxed{\\frac{6}{3}}", "2"));
        assert!(answers_match("\\boxed{2.0000000001}", "2"));
        assert!(answers_match("\\boxed{0.3333333333}", "1/3"));
        assert!(!answers_match("\\boxed{0.333}", "1/3"));
        assert!(answers_match("\\boxed{0}", "0"));
        assert!(answers_match("\\boxed{-0}", "0"));
        assert!(!answers_match("\\boxed{1e-12}", "0"));
        assert!(!answers_match("\\boxed{-5}", "5"));
    }

    #[test]
    fn answers_match_strings() {
        assert!(answers_match("\\boxed{\\text{(B)}}", "\\text{(B)}"));
        assert!(answers_match("<answer>  New   York </answer>", "New York"));
        assert!(answers_match("The answer is $x^2 + 1$.", "x^2  +  1"));
        assert!(!answers_match("<answer>new york</answer>", "New York"));
        assert!(answers_match("\\boxed{2, 3}", "2, 3"));
        assert!(!answers_match("\\boxed{2, 3}", "2"));
        assert!(!answers_match("no answer here", "yes"));
        assert!(!answers_match("\\boxed{}", ""));
        assert!(!answers_match("\\boxed{5}", "   "));
        assert!(!answers_match("", "5"));
        // Reference with a \boxed answer (MATH-style solution text).
        assert!(answers_match("#### 0.25", "so we get $\\boxed{\\frac14}$."));
    }

    // ---- think_format_ok ----

    #[test]
    fn think_format() {
        assert!(think_format_ok("<think>reasoning</think>42"));
        assert!(think_format_ok(
            "\n <think>\nstep 1\nstep 2\n</think>\n\nThe answer is 4."
        ));
        assert!(think_format_ok("<think></think> 4"));
        assert!(!think_format_ok("<think>reasoning</think>"));
        assert!(!think_format_ok("<think>reasoning</think>  \n\t"));
        assert!(!think_format_ok("<think>reasoning"));
        assert!(!think_format_ok("reasoning</think>42"));
        assert!(!think_format_ok("Sure! <think>r</think>42"));
        assert!(!think_format_ok("<think>a</think>b<think>c</think>d"));
        assert!(!think_format_ok("<think>a<think>b</think>c"));
        assert!(!think_format_ok("<think>a</think>b</think>c"));
        assert!(!think_format_ok("</think><think>a"));
        assert!(!think_format_ok(""));
        assert!(!think_format_ok("<THINK>a</THINK>b"));
    }

    #[test]
    fn think_format_random() {
        let mut rng = Rng(4242);
        let pieces = [
            "a", " ", "\n", "<think>", "</think>", "42", "<", ">", "think",
        ];
        for _ in 0..5_000 {
            let n = rng.below(8) as usize;
            let text: String = (0..n).map(|_| rng.pick(&pieces)).collect();
            // Reference rule, written differently: split into exactly [prefix, reasoning, answer].
            let t = text.trim_start();
            let want = t
                .strip_prefix("<think>")
                .and_then(|rest| {
                    let parts: Vec<&str> = rest.split("</think>").collect();
                    (parts.len() == 2
                        && !parts[0].contains("<think>")
                        && !parts[1].contains("<think>"))
                    .then(|| parts[1])
                })
                .is_some_and(|answer| !answer.trim().is_empty());
            assert_eq!(think_format_ok(&text), want, "{text:?}");
        }
    }

    // ---- overlong_penalty ----

    #[test]
    fn overlong_penalty_matches_dapo() {
        // L_max = 20480, L_cache = 4096 as in the DAPO paper.
        let (max, buf) = (20_480, 4_096);
        assert_eq!(overlong_penalty(0, max, buf), 0.0);
        assert_eq!(overlong_penalty(16_384, max, buf), 0.0);
        assert_eq!(overlong_penalty(16_385, max, buf), -1.0 / 4096.0);
        assert_eq!(overlong_penalty(18_432, max, buf), -0.5);
        assert_eq!(overlong_penalty(20_480, max, buf), -1.0);
        assert_eq!(overlong_penalty(20_481, max, buf), -1.0);
        assert_eq!(overlong_penalty(usize::MAX, max, buf), -1.0);
        // No buffer: a hard cliff, no division by zero.
        assert_eq!(overlong_penalty(100, 100, 0), 0.0);
        assert_eq!(overlong_penalty(101, 100, 0), -1.0);
        // Buffer larger than the limit: the formula as written.
        assert_eq!(overlong_penalty(0, 100, 200), -0.5);
        assert_eq!(overlong_penalty(100, 100, 200), -1.0);
    }

    #[test]
    fn overlong_penalty_random_properties() {
        let mut rng = Rng(31337);
        for _ in 0..10_000 {
            let max = rng.below(10_000) as usize + 1;
            let buf = rng.below(max as u64 + 1) as usize;
            let len = rng.below(12_000) as usize;
            let p = overlong_penalty(len, max, buf);
            assert!((-1.0..=0.0).contains(&p), "{len} {max} {buf}: {p}");
            let expected = if len <= max - buf {
                0.0
            } else if len <= max {
                (max as f64 - buf as f64 - len as f64) / buf as f64
            } else {
                -1.0
            };
            assert!(
                (f64::from(p) - expected).abs() < 1e-6,
                "{len} {max} {buf}: {p} vs {expected}"
            );
            // Monotone: one more token never raises the reward.
            assert!(overlong_penalty(len + 1, max, buf) <= p);
        }
    }
}
