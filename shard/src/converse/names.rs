//! Is the agent's name in what Whisper heard? Tolerant of Whisper's spellings ("Jarvis" heard
//! as "Jervis", "Jarvus", "Jar vis"), guarded against ordinary words that merely sound close.
//!
//! A heard word matches a name when it is the name (or an alias), or when all of these hold:
//! the two share a phonetic key (consonant classes, vowels dropped), their edit distance is
//! small for their length, they start with the same sound, and the heard word is not a common
//! word. "Common" is decided by a word list: by default the whole-word tokens of Whisper's own
//! vocabulary (50k BPE tokens, so every frequent English word), else a small built-in list.

use std::collections::HashSet;

use crate::listen::guard::normalize;

/// How a name was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// Spelled exactly (case and punctuation aside).
    Exact,
    /// Sounds alike and is spelled alike (a Whisper misspelling).
    Fuzzy,
    /// Two heard words that together spell the name ("Jar vis").
    Split,
}

/// A recognised name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NameMatch {
    /// The configured name or alias.
    pub name: String,
    /// What Whisper wrote.
    pub heard: String,
    /// How it matched.
    #[serde(rename = "match")]
    pub kind: MatchKind,
}

/// Words that never match a name fuzzily.
#[derive(Debug, Clone, Default)]
pub struct CommonWords(HashSet<String>);

const BUILT_IN_COMMON: &[&str] = &[
    "service", "nervous", "jars", "jar", "purpose", "harvest", "travis", "davis", "jobs", "james",
    "jersey", "marvels", "marvel", "carvings", "surface", "thesis", "chris", "jeremy", "page",
    "stage", "sage", "safe", "save", "same", "say", "says", "cage", "age", "edge", "siege", "sake",
    "sales", "sail", "sang", "sing", "sync", "sink", "stays", "days", "ways", "pays", "raise",
    "gaze", "jazz", "just", "judge", "charge", "large", "garage", "message", "manage", "image",
    "usage", "village", "this", "his", "is", "was", "vest",
];

impl CommonWords {
    /// The built-in list (a few hundred near-misses of typical agent names).
    pub fn built_in() -> Self {
        Self(BUILT_IN_COMMON.iter().map(|w| (*w).to_string()).collect())
    }

    /// Whole-word tokens (those written with a leading `Ġ` space marker) of Whisper's
    /// `vocabulary.txt`, plus the built-in list.
    pub fn from_whisper_vocabulary(text: &str) -> Self {
        let mut words = Self::built_in().0;
        for token in text.lines() {
            if let Some(word) = token.strip_prefix('Ġ') {
                let w = word.to_lowercase();
                if w.len() >= 2 && w.chars().all(|c| c.is_ascii_alphabetic()) {
                    words.insert(w);
                }
            }
        }
        Self(words)
    }

    /// Whether `word` (normalised) is common.
    pub fn contains(&self, word: &str) -> bool {
        self.0.contains(word)
    }
}

/// Consonant class of a letter (Soundex-like); vowels and h/w/y are `None`.
fn class(c: char) -> Option<char> {
    Some(match c {
        'b' | 'p' => 'p',
        'f' | 'v' => 'f',
        'c' | 'k' | 'q' | 'g' | 'x' => 'k',
        'j' => 'j',
        's' | 'z' => 's',
        'd' | 't' => 't',
        'l' => 'l',
        'm' | 'n' => 'n',
        'r' => 'r',
        _ => return None,
    })
}

/// An agent's display name from its id: `jarvis` → `Jarvis` (how people say it, and the name
/// relevance listens for).
pub fn display_name(agent: &str) -> String {
    let mut c = agent.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// Phonetic key: the first sound (vowel-initial words keep a marker), then consonant classes
/// with repeats collapsed. "jarvis" and "jervis" → "jrfs".
pub fn phonetic_key(word: &str) -> String {
    let letters: Vec<char> = word.chars().filter(char::is_ascii_alphabetic).collect();
    let mut key = String::new();
    let mut last = None;
    for (i, c) in letters.iter().enumerate() {
        let cls = match (c, letters.get(i + 1)) {
            // "ph" sounds like f, "ch" like j/k: close enough for names.
            ('p', Some('h')) => Some('f'),
            ('c', Some('h')) => Some('j'),
            ('g', Some('e' | 'i' | 'y')) if i == 0 => Some('j'),
            _ => class(*c),
        };
        match cls {
            Some(k) if last != Some(k) => key.push(k),
            None if i == 0 => key.push('a'),
            _ => {}
        }
        last = cls.or(if i == 0 { Some('a') } else { None });
    }
    key
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A name or alias ready for matching.
#[derive(Debug, Clone)]
struct Target {
    display: String,
    /// Normalised words of the name.
    words: Vec<String>,
    joined: String,
    key: String,
}

/// Matches an agent's name and aliases in transcripts.
#[derive(Debug, Clone)]
pub struct NameMatcher {
    targets: Vec<Target>,
    common: CommonWords,
}

impl NameMatcher {
    /// A matcher for `names` (the agent's name first, then aliases).
    pub fn new<S: AsRef<str>>(names: &[S], common: CommonWords) -> Self {
        let targets = names
            .iter()
            .filter_map(|n| {
                let norm = normalize(n.as_ref());
                if norm.is_empty() {
                    return None;
                }
                let words: Vec<String> = norm.split(' ').map(str::to_string).collect();
                let joined = words.concat();
                Some(Target {
                    display: n.as_ref().to_string(),
                    key: phonetic_key(&joined),
                    words,
                    joined,
                })
            })
            .collect();
        Self { targets, common }
    }

    /// The names it recognises, as given (the agent's, then its aliases).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.display.as_str())
    }

    fn fuzzy(&self, heard: &str, target: &Target) -> bool {
        if heard.len() < 3 || self.common.contains(heard) {
            return false;
        }
        let max = match target.joined.len() {
            0..=3 => 0,
            4..=5 => 1,
            _ => 2,
        };
        edit_distance(heard, &target.joined) <= max
            && phonetic_key(heard) == target.key
            && heard.chars().next().and_then(class) == target.joined.chars().next().and_then(class)
    }

    /// The first name heard in `transcript`, if any.
    pub fn find(&self, transcript: &str) -> Option<NameMatch> {
        let norm = normalize(transcript);
        let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
        for target in &self.targets {
            let n = target.words.len();
            // Exact, possibly multi-word ("hey jarvis").
            if words
                .windows(n)
                .any(|w| w.iter().zip(&target.words).all(|(a, b)| a == b))
            {
                return Some(NameMatch {
                    name: target.display.clone(),
                    heard: target.words.join(" "),
                    kind: MatchKind::Exact,
                });
            }
        }
        for target in &self.targets {
            for (i, w) in words.iter().enumerate() {
                if self.fuzzy(w, target) {
                    return Some(NameMatch {
                        name: target.display.clone(),
                        heard: (*w).to_string(),
                        kind: MatchKind::Fuzzy,
                    });
                }
                // "Jar vis": two words that spell the name (or nearly).
                if let Some(next) = words.get(i + 1) {
                    let joined = format!("{w}{next}");
                    if joined == target.joined
                        || (!self.common.contains(&joined) && self.fuzzy(&joined, target))
                    {
                        return Some(NameMatch {
                            name: target.display.clone(),
                            heard: format!("{w} {next}"),
                            kind: MatchKind::Split,
                        });
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jarvis() -> NameMatcher {
        NameMatcher::new(&["Jarvis", "J.A.R.V.I.S."], CommonWords::built_in())
    }

    #[test]
    fn whisper_spellings_of_the_name_match() {
        let m = jarvis();
        for heard in [
            "Jarvis, what time is it?",
            "Hey Jervis, what time is it?",
            "Jarvus turn on the lights",
            "Jarviss, are you there?",
            "OK Jar vis, play music",
            "hey jarvis",
        ] {
            assert!(m.find(heard).is_some(), "{heard:?} should match");
        }
        assert_eq!(m.find("Hey Jervis").unwrap().kind, MatchKind::Fuzzy);
        assert_eq!(m.find("Jar vis, stop").unwrap().kind, MatchKind::Split);
    }

    #[test]
    fn ordinary_sentences_do_not() {
        let m = jarvis();
        for heard in [
            "The customer service was great.",
            "I was nervous about the exam.",
            "Travis is coming over later.",
            "Put the jars on the shelf.",
            "What is the purpose of this?",
            "We visited Paris last year.",
            "",
        ] {
            assert!(
                m.find(heard).is_none(),
                "{heard:?} should not match: {:?}",
                m.find(heard)
            );
        }
    }

    #[test]
    fn whisper_vocabulary_marks_common_words() {
        let common =
            CommonWords::from_whisper_vocabulary("Ġthe\nĠservice\nĠJar\nvis\n<|endoftext|>\n");
        assert!(common.contains("service") && common.contains("jar"));
        assert!(!common.contains("vis"), "word pieces are not words");
    }

    #[test]
    fn phonetic_keys() {
        assert_eq!(phonetic_key("jarvis"), phonetic_key("jervis"));
        assert_eq!(phonetic_key("sage"), phonetic_key("saige"));
        assert_ne!(phonetic_key("jarvis"), phonetic_key("harvest"));
        assert_eq!(edit_distance("jarvis", "jervis"), 1);
    }
}
