//! The recent transcript of a channel, sent with each turn so the agent knows what was said.

use std::collections::VecDeque;

/// One line of the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When it was said (ms on the conversation's clock).
    pub at_ms: u64,
    /// Who said it (display name; the agent's own name for its replies).
    pub speaker: String,
    /// What was said (for the agent: what was actually spoken, cut at a barge-in).
    pub text: String,
}

/// A window of the channel's recent lines: at most `max_lines`, none older than `max_age_ms`.
#[derive(Debug, Clone)]
pub struct Transcript {
    lines: VecDeque<Line>,
    max_lines: usize,
    max_age_ms: u64,
}

impl Default for Transcript {
    fn default() -> Self {
        Self::new(20, 90_000)
    }
}

impl Transcript {
    /// An empty window.
    pub fn new(max_lines: usize, max_age_ms: u64) -> Self {
        Self {
            lines: VecDeque::with_capacity(max_lines.min(256)),
            max_lines: max_lines.max(1),
            max_age_ms,
        }
    }

    /// Adds a line and drops what falls out of the window.
    pub fn push(&mut self, at_ms: u64, speaker: impl Into<String>, text: impl Into<String>) {
        self.lines.push_back(Line {
            at_ms,
            speaker: speaker.into(),
            text: text.into(),
        });
        while self.lines.len() > self.max_lines {
            self.lines.pop_front();
        }
        self.expire(at_ms);
    }

    /// Drops lines older than the window at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while self
            .lines
            .front()
            .is_some_and(|l| now_ms.saturating_sub(l.at_ms) > self.max_age_ms)
        {
            self.lines.pop_front();
        }
    }

    /// The lines in the window.
    pub fn lines(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter()
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The message sent to the agent: the recent lines (without the last, which is the turn
    /// itself), then the turn, marked with its speaker.
    pub fn prompt_for(&self, speaker: &str, text: &str) -> String {
        let earlier: Vec<String> = self
            .lines
            .iter()
            .filter(|l| !(l.speaker == speaker && l.text == text))
            .map(|l| format!("{}: {}", l.speaker, l.text))
            .collect();
        if earlier.is_empty() {
            format!("{speaker}: {text}")
        } else {
            format!(
                "[Recent conversation in the voice channel]\n{}\n[Now]\n{speaker}: {text}",
                earlier.join("\n")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_bounded_by_count_and_age() {
        let mut t = Transcript::new(3, 10_000);
        for i in 0..5 {
            t.push(i * 1000, "ann", format!("line {i}"));
        }
        assert_eq!(t.len(), 3);
        t.push(20_000, "bob", "later");
        assert_eq!(
            t.lines().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            vec!["later"]
        );
    }

    #[test]
    fn prompt_names_speakers() {
        let mut t = Transcript::default();
        t.push(0, "ann", "I think it will rain.");
        t.push(1000, "bob", "Jarvis, will it rain?");
        let p = t.prompt_for("bob", "Jarvis, will it rain?");
        assert!(
            p.contains("ann: I think it will rain.") && p.ends_with("bob: Jarvis, will it rain?"),
            "{p}"
        );
        assert_eq!(Transcript::default().prompt_for("bob", "hi"), "bob: hi");
    }
}
