//! Evaluation helpers shared by the tests and the benchmarks.

use crate::listen::guard::normalize;

const SMALL: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// Spells whole numbers below 100 ("10" → "ten", "42" → "forty two"), so that a transcript
/// writing digits is not counted wrong against a reference that spells them.
fn spell_numbers(normalized: &str) -> String {
    normalized
        .split(' ')
        .map(|w| match w.parse::<usize>() {
            Ok(n) if n < 20 => SMALL[n].to_string(),
            Ok(n) if n < 100 && n % 10 == 0 => TENS[n / 10].to_string(),
            Ok(n) if n < 100 => format!("{} {}", TENS[n / 10], SMALL[n % 10]),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Word error rate of `hypothesis` against `reference`, after normalisation (case,
/// punctuation, small numbers spelled out). 0.0 is perfect; it can exceed 1.0 when the
/// hypothesis adds words.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f32 {
    let r = spell_numbers(&normalize(reference));
    let h = spell_numbers(&normalize(hypothesis));
    let r: Vec<&str> = r.split(' ').filter(|w| !w.is_empty()).collect();
    let h: Vec<&str> = h.split(' ').filter(|w| !w.is_empty()).collect();
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f32 / r.len() as f32
}

/// Percentile (0–100) of a sample set by nearest rank; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wer_counts_edits() {
        assert_eq!(
            word_error_rate("Hey Jarvis, what time is it?", "hey jarvis what time is it"),
            0.0
        );
        assert_eq!(word_error_rate("a b c d", "a x c d"), 0.25);
        assert_eq!(word_error_rate("a b c d", "a c d"), 0.25);
        assert_eq!(word_error_rate("a b", "a b c d"), 1.0);
        assert_eq!(word_error_rate("", ""), 0.0);
        assert_eq!(
            word_error_rate("set it for ten minutes", "Set it for 10 minutes."),
            0.0
        );
        assert_eq!(word_error_rate("forty two", "42"), 0.0);
    }

    #[test]
    fn percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 95.0), Some(5.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
