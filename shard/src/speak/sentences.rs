//! Streaming sentence splitter: reply deltas in, speakable sentences out, as soon as each is
//! complete, so text-to-speech can start while the model is still writing.
//!
//! Boundaries are `.`, `!`, `?` (and `…`) followed by whitespace, and line breaks. Not
//! boundaries: abbreviations ("Dr.", "e.g.", "U.S."), initials ("J. R. R."), decimals ("3.14"),
//! list numbers ("1. "). The first sentence may be cut at a comma once it has a few words, so
//! the first audio comes sooner. Markdown (emphasis, code, headings, links, bullets) and emoji
//! are removed; nothing that has words is ever dropped, however short ("Sure.").

const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "eg", "ie", "approx",
    "dept", "est", "fig", "inc", "ltd", "co", "corp", "no", "vol", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "am", "pm", "us", "uk", "eu",
];

/// Splits a streamed reply into sentences.
///
/// Linear in the reply's length however it is streamed: the scan for a boundary resumes where
/// the last one stopped (only the last character, whose meaning may depend on the next one, is
/// looked at again), and what it needs of the text behind it (words so far, the current word
/// and line) is carried along instead of searched for.
#[derive(Debug, Clone)]
pub struct SentenceSplitter {
    buf: String,
    emitted: usize,
    /// Cut the first sentence at a comma once it has this many words (0 = never).
    first_clause_words: usize,
    /// Where the scan of `buf` stands.
    scan: Scan,
}

/// The scan's state just before the byte `pos` of the buffer (whose sentence starts at 0).
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    pos: usize,
    /// Words wholly or partly before `pos`.
    words: usize,
    /// Whether the character before `pos` is part of a word.
    in_word: bool,
    /// Where the word around `pos` starts.
    word_start: usize,
    /// Where the line around `pos` starts.
    line_start: usize,
    /// Whether anything but whitespace comes before `pos`.
    seen_text: bool,
}

impl Scan {
    /// The state after the character `c` at `pos`.
    fn step(mut self, c: char) -> Self {
        let after = self.pos + c.len_utf8();
        if c.is_whitespace() {
            self.in_word = false;
            self.word_start = after;
        } else {
            if !self.in_word {
                self.words += 1;
            }
            self.in_word = true;
            self.seen_text = true;
        }
        if c == '\n' {
            self.line_start = after;
        }
        self.pos = after;
        self
    }
}

impl Default for SentenceSplitter {
    fn default() -> Self {
        Self::new(4)
    }
}

fn is_abbreviation(word: &str) -> bool {
    let bare: String = word
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    if bare.is_empty() {
        return false;
    }
    // Initials and dotted abbreviations: "J.", "U.S.", "e.g.".
    let letters_between_dots = word
        .trim_end_matches('.')
        .split('.')
        .all(|p| p.chars().count() == 1);
    (bare.chars().count() == 1 && bare.chars().all(char::is_alphabetic))
        || (word.matches('.').count() >= 2 && letters_between_dots)
        || ABBREVIATIONS.contains(&bare.as_str())
}

impl SentenceSplitter {
    /// A splitter; see [`SentenceSplitter::default`] for the usual setting.
    pub fn new(first_clause_words: usize) -> Self {
        Self {
            buf: String::new(),
            emitted: 0,
            first_clause_words,
            scan: Scan::default(),
        }
    }

    /// Adds reply text; returns the sentences it completed.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let raw: String = self.buf.drain(..end).collect();
            self.scan = Scan::default();
            if let Some(s) = clean(&raw) {
                out.push(s);
                self.emitted += 1;
            }
        }
        out
    }

    /// Ends the reply; returns what is left as a last sentence.
    pub fn finish(&mut self) -> Option<String> {
        self.scan = Scan::default();
        let raw = std::mem::take(&mut self.buf);
        let s = clean(&raw)?;
        self.emitted += 1;
        Some(s)
    }

    /// Byte index just past the first complete sentence in the buffer, scanning on from where
    /// the last call stopped.
    fn boundary(&mut self) -> Option<usize> {
        let text = self.buf.as_str();
        let mut chars = text[self.scan.pos..].chars().peekable();
        let mut at = self.scan;
        while let Some(c) = chars.next() {
            let before = at;
            let i = at.pos;
            let next = chars.peek().copied();
            let after = i + c.len_utf8();
            at = at.step(c);
            // The last character may mean something else once the next one comes: look at it
            // again then.
            if next.is_none() {
                self.scan = before;
            }
            match c {
                '\n' => {
                    if !before.seen_text {
                        continue;
                    }
                    return Some(after);
                }
                '.' | '!' | '?' | '…' => {
                    // The text may end right here (gateways trim the whitespace after a
                    // sentence): decide without the next character unless it could change
                    // the answer — a '.' after digits (3.14) or a closing quote to come.
                    let word_start = before.word_start;
                    let Some(n) = next else {
                        let word = &text[word_start..after];
                        let digits = text[word_start..i].chars().all(|d| d.is_ascii_digit());
                        if c != '.' || !(is_abbreviation(word) || digits) {
                            return Some(after);
                        }
                        return None;
                    };
                    if !n.is_whitespace() && !matches!(n, '"' | '\'' | ')' | '”' | '’') {
                        continue; // 3.14, e.g.x, "...?!"
                    }
                    if c == '.' {
                        let word = &text[word_start..after];
                        let line = text[before.line_start..i].trim();
                        let is_list_number =
                            !line.is_empty() && line.chars().all(|d| d.is_ascii_digit());
                        if is_abbreviation(word) || is_list_number {
                            continue;
                        }
                    }
                    // Include a closing quote or bracket.
                    let end = match n {
                        '"' | '\'' | ')' | '”' | '’' => after + n.len_utf8(),
                        _ => after,
                    };
                    return Some(end);
                }
                ',' | ';' | ':'
                    if self.emitted == 0
                        && self.first_clause_words > 0
                        && next.is_some_and(char::is_whitespace)
                        && before.words >= self.first_clause_words =>
                {
                    return Some(after);
                }
                _ => {}
            }
        }
        None
    }
}

fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0xFE0F | 0x200D | 0x2190..=0x21FF)
}

/// Markdown and emoji out; `None` when no word is left.
pub fn clean(raw: &str) -> Option<String> {
    let mut s = String::with_capacity(raw.len());
    for line in raw.lines() {
        let mut l = line.trim();
        if l.starts_with("```") {
            continue;
        }
        l = l.trim_start_matches('#').trim_start();
        for bullet in ["- ", "* ", "+ ", "> "] {
            if let Some(rest) = l.strip_prefix(bullet) {
                l = rest;
            }
        }
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(l);
    }
    // [text](url) -> text
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|c| open + c) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|e| close + e) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    let out: String = out
        .chars()
        .filter(|c| !matches!(c, '*' | '_' | '`' | '~') && !is_emoji(*c))
        .collect();
    let mut out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    // What was removed may leave "today ." behind.
    for p in [" .", " ,", " !", " ?", " ;", " :"] {
        out = out.replace(p, &p[1..]);
    }
    out.chars().any(char::is_alphanumeric).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_stream(text: &str, chunk: usize) -> Vec<String> {
        let mut s = SentenceSplitter::new(0);
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for piece in chars.chunks(chunk) {
            out.extend(s.push(&piece.iter().collect::<String>()));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn splits_sentences_whatever_the_delta_size() {
        let text =
            "Sure. Dr. Smith lives at 221 B St. in London! Pi is 3.14, roughly. Is that all? Yes.";
        let expected = vec![
            "Sure.",
            "Dr. Smith lives at 221 B St. in London!",
            "Pi is 3.14, roughly.",
            "Is that all?",
            "Yes.",
        ];
        for chunk in [1, 3, 7, 1000] {
            assert_eq!(split_stream(text, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn abbreviations_initials_and_lists() {
        assert_eq!(
            split_stream(
                "Bring snacks, e.g. chips and dips. J. R. R. Tolkien wrote it. The U.S. team won.",
                5
            ),
            vec![
                "Bring snacks, e.g. chips and dips.",
                "J. R. R. Tolkien wrote it.",
                "The U.S. team won."
            ]
        );
        assert_eq!(
            split_stream("You need:\n1. flour\n2. eggs\n- a **big** bowl\n", 4),
            vec!["You need:", "1. flour", "2. eggs", "a big bowl"]
        );
    }

    #[test]
    fn markdown_and_emoji_are_removed_and_nothing_is_lost() {
        assert_eq!(
            split_stream(
                "## Weather 🌦️\nIt's *sunny* in `Paris` today 😀. See [the forecast](https://x.y/z).",
                6
            ),
            vec!["Weather", "It's sunny in Paris today.", "See the forecast."]
        );
        assert_eq!(split_stream("Ok", 1), vec!["Ok"]);
        assert!(split_stream("🎉🎉 ... ", 2).is_empty());
    }

    #[test]
    fn a_sentence_at_the_end_of_the_text_goes_at_once() {
        let mut s = SentenceSplitter::new(0);
        assert_eq!(
            s.push("Sure."),
            vec!["Sure."],
            "no need to wait for the next delta"
        );
        assert_eq!(s.push("Really?"), vec!["Really?"]);
        assert!(s.push("It costs 3.").is_empty(), "3. may become 3.14");
        assert_eq!(
            s.push("50 dollars. Ask Dr."),
            vec!["It costs 3.50 dollars."]
        );
        assert!(s.push("").is_empty(), "Dr. is not an end");
        assert_eq!(s.push(" Who. Then"), vec!["Ask Dr. Who."]);
    }

    #[test]
    fn the_first_clause_can_go_early() {
        let mut s = SentenceSplitter::new(4);
        assert!(s.push("Well, that").is_empty(), "too short to cut");
        let first = s.push(" is a good question, and the answer is long");
        assert_eq!(first, vec!["Well, that is a good question,"]);
        assert!(
            s.push(", with commas").is_empty(),
            "only the first sentence is cut early"
        );
        assert_eq!(
            s.push(". Next."),
            vec!["and the answer is long, with commas.", "Next."]
        );
    }

    /// The splitter as it was (rescanning the buffer from its start at every delta): the
    /// reference the resumable scan must agree with, delta for delta.
    struct Rescanning {
        buf: String,
        emitted: usize,
        first_clause_words: usize,
    }

    impl Rescanning {
        fn push(&mut self, delta: &str) -> Vec<String> {
            self.buf.push_str(delta);
            let mut out = Vec::new();
            while let Some(end) = self.boundary() {
                let raw: String = self.buf.drain(..end).collect();
                if let Some(s) = clean(&raw) {
                    out.push(s);
                    self.emitted += 1;
                }
            }
            out
        }

        /// Byte index just past the first complete sentence in the buffer.
        fn boundary(&self) -> Option<usize> {
            let text = &self.buf;
            let chars: Vec<(usize, char)> = text.char_indices().collect();
            for (k, &(i, c)) in chars.iter().enumerate() {
                let next = chars.get(k + 1).map(|&(_, n)| n);
                let after = i + c.len_utf8();
                match c {
                    '\n' => {
                        if text[..i].trim().is_empty() {
                            continue;
                        }
                        return Some(after);
                    }
                    '.' | '!' | '?' | '…' => {
                        // The text may end right here (gateways trim the whitespace after a
                        // sentence): decide without the next character unless it could change
                        // the answer — a '.' after digits (3.14) or a closing quote to come.
                        let Some(n) = next else {
                            let word_start =
                                text[..i].rfind(char::is_whitespace).map_or(0, |w| w + 1);
                            let word = &text[word_start..after];
                            let digits = text[word_start..i].chars().all(|d| d.is_ascii_digit());
                            if c != '.' || !(is_abbreviation(word) || digits) {
                                return Some(after);
                            }
                            return None;
                        };
                        if !n.is_whitespace() && !matches!(n, '"' | '\'' | ')' | '”' | '’') {
                            continue; // 3.14, e.g.x, "...?!"
                        }
                        if c == '.' {
                            let word_start =
                                text[..i].rfind(char::is_whitespace).map_or(0, |w| w + 1);
                            let word = &text[word_start..after];
                            let line_start = text[..i].rfind('\n').map_or(0, |l| l + 1);
                            let is_list_number = text[line_start..i]
                                .trim()
                                .chars()
                                .all(|d| d.is_ascii_digit())
                                && !text[line_start..i].trim().is_empty();
                            if is_abbreviation(word) || is_list_number {
                                continue;
                            }
                        }
                        // Include a closing quote or bracket.
                        let end = match n {
                            '"' | '\'' | ')' | '”' | '’' => after + n.len_utf8(),
                            _ => after,
                        };
                        return Some(end);
                    }
                    ',' | ';' | ':'
                        if self.emitted == 0
                            && self.first_clause_words > 0
                            && next.is_some_and(char::is_whitespace)
                            && text[..i].split_whitespace().count() >= self.first_clause_words =>
                    {
                        return Some(after);
                    }
                    _ => {}
                }
            }
            None
        }
    }

    proptest::proptest! {
        /// Delta for delta, the resumable scan finds the sentences the rescanning one found
        /// (what would break if it resumed in the wrong place or with the wrong state).
        #[test]
        fn the_resumable_scan_agrees_with_rescanning(
            text in "[a-z3 .,!?\\n\"e]{0,120}",
            chunk in 1usize..9,
            first in 0usize..4,
        ) {
            let mut new = SentenceSplitter::new(first);
            let mut reference = Rescanning { buf: String::new(), emitted: 0, first_clause_words: first };
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(chunk) {
                let piece: String = piece.iter().collect();
                proptest::prop_assert_eq!(new.push(&piece), reference.push(&piece));
            }
            proptest::prop_assert_eq!(new.finish(), clean(&reference.buf));
        }
    }

    #[test]
    fn a_long_reply_streamed_a_character_at_a_time_is_split_in_linear_time() {
        // 200 000 characters without a boundary, then one: the old splitter rescanned the
        // buffer from its start at every delta (≈ 2·10¹⁰ steps here); this one looks at each
        // character about once. Counted, not timed: the scan position only moves forward.
        let mut s = SentenceSplitter::new(0);
        let mut rescans = 0usize;
        let mut last = 0;
        for _ in 0..100_000 {
            assert!(s.push("a").is_empty());
            assert!(s.push(" ").is_empty());
            rescans += s.buf.len() - s.scan.pos;
            assert!(s.scan.pos >= last, "the scan went back");
            last = s.scan.pos;
        }
        assert!(rescans <= 2 * 200_000, "{rescans} characters scanned again");
        assert_eq!(s.push(".\n").len(), 1);
    }
}
