//! Should the bot answer this turn? Name, solo mode, follow-up window, and — at medium and high
//! sensitivity — an LLM classifier, with the reason for every decision.

use std::time::Duration;

use super::names::{NameMatch, NameMatcher};

/// How readily the bot joins in: the configuration's type (`defaultSensitivity`, Redis,
/// `/sensitivity`, `--sensitivity` all share it).
pub use voicebot_config::Sensitivity;

/// Why a turn was or was not for the bot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The agent's name (or an alias) was heard.
    Name(NameMatch),
    /// Only one human is in the channel: everything is for the bot.
    Solo,
    /// The person the bot just answered went on within the follow-up window.
    FollowUp {
        /// Time since the bot's reply ended.
        since_ms: u64,
    },
    /// The classifier's confidence reached the level's threshold.
    Classifier {
        /// Its confidence.
        confidence: f32,
        /// The threshold in force.
        threshold: f32,
    },
    /// No name, and the classifier was below the threshold.
    BelowThreshold {
        /// Its confidence.
        confidence: f32,
        /// The threshold in force.
        threshold: f32,
    },
    /// No name at low sensitivity.
    NotAddressed,
    /// The classifier failed or timed out: name-only.
    ClassifierUnavailable {
        /// What went wrong.
        error: String,
    },
    /// Nothing was said (empty transcript).
    Empty,
    /// Not a heard turn: a reply a previous pod was speaking, spoken again after a restart.
    Recovered,
}

impl Reason {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Name(_) => "name",
            Self::Solo => "solo",
            Self::FollowUp { .. } => "follow_up",
            Self::Classifier { .. } => "classifier",
            Self::BelowThreshold { .. } => "below_threshold",
            Self::NotAddressed => "not_addressed",
            Self::ClassifierUnavailable { .. } => "classifier_unavailable",
            Self::Empty => "empty",
            Self::Recovered => "recovered",
        }
    }
}

/// A decision.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    /// Answer or not.
    pub addressed: bool,
    /// Why.
    pub reason: Reason,
}

/// What the relevance check knows about the turn.
#[derive(Debug, Clone)]
pub struct Turn<'a> {
    /// Who spoke.
    pub speaker: &'a str,
    /// What they said.
    pub text: &'a str,
    /// When the turn ended (ms on the conversation clock).
    pub at_ms: u64,
    /// Humans in the voice channel (the bot excluded).
    pub humans_present: usize,
    /// The speaker the bot last answered, and when its reply ended.
    pub last_answered: Option<(&'a str, u64)>,
    /// The recent transcript, for the classifier.
    pub context: &'a str,
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct RelevanceConfig {
    /// After the bot replies, the same person needs no name for this long.
    pub follow_up_ms: u64,
    /// Classifier confidence needed at medium sensitivity.
    pub medium_threshold: f32,
    /// Classifier confidence needed at high sensitivity.
    pub high_threshold: f32,
    /// The classifier's time budget; beyond it the decision is name-only.
    pub classifier_timeout: Duration,
}

impl Default for RelevanceConfig {
    fn default() -> Self {
        Self {
            follow_up_ms: 15_000,
            medium_threshold: 0.8,
            high_threshold: 0.5,
            classifier_timeout: Duration::from_millis(1_500),
        }
    }
}

/// Something that estimates how likely a turn is meant for (or useful to) the bot.
pub trait Classifier: Send + Sync {
    /// Confidence in [0, 1] that the bot should answer `text` given `context`.
    fn classify<'a>(
        &'a self,
        agent: &'a str,
        context: &'a str,
        text: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<f32, String>> + Send + 'a>>;
}

/// The relevance check for one agent.
pub struct Relevance {
    agent: String,
    names: NameMatcher,
    config: RelevanceConfig,
}

impl Relevance {
    /// A check for `agent`, recognising `names`.
    pub fn new(agent: impl Into<String>, names: NameMatcher, config: RelevanceConfig) -> Self {
        Self {
            agent: agent.into(),
            names,
            config,
        }
    }

    /// The names the agent answers to.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.names()
    }

    /// Where in `text` the agent is named (an index into the normalised words' text; `None`
    /// when it is not): orders the agents of a room named in one turn.
    pub fn mention(&self, text: &str) -> Option<usize> {
        let m = self.names.find(text)?;
        Some(
            crate::listen::guard::normalize(text)
                .find(m.heard.as_str())
                .unwrap_or(0),
        )
    }

    /// How long after the agent spoke a turn of the same speaker is its follow-up.
    pub fn follow_up_ms(&self) -> u64 {
        self.config.follow_up_ms
    }

    /// The decisions that need no classifier; `None` means "ask the classifier".
    pub fn decide_fast(&self, turn: &Turn<'_>, sensitivity: Sensitivity) -> Option<Decision> {
        let yes = |reason| {
            Some(Decision {
                addressed: true,
                reason,
            })
        };
        if crate::listen::guard::normalize(turn.text).is_empty() {
            return Some(Decision {
                addressed: false,
                reason: Reason::Empty,
            });
        }
        if let Some(m) = self.names.find(turn.text) {
            return yes(Reason::Name(m));
        }
        if turn.humans_present == 1 {
            return yes(Reason::Solo);
        }
        if let Some((who, ended)) = turn.last_answered {
            let since = turn.at_ms.saturating_sub(ended);
            if who == turn.speaker && since <= self.config.follow_up_ms {
                return yes(Reason::FollowUp { since_ms: since });
            }
        }
        match sensitivity {
            Sensitivity::Low => Some(Decision {
                addressed: false,
                reason: Reason::NotAddressed,
            }),
            Sensitivity::Medium | Sensitivity::High => None,
        }
    }

    /// The full decision, asking `classifier` when the fast path cannot decide.
    pub async fn decide(
        &self,
        turn: &Turn<'_>,
        sensitivity: Sensitivity,
        classifier: Option<&dyn Classifier>,
    ) -> Decision {
        let decision = match self.decide_fast(turn, sensitivity) {
            Some(d) => d,
            None => {
                let threshold = match sensitivity {
                    Sensitivity::High => self.config.high_threshold,
                    _ => self.config.medium_threshold,
                };
                let outcome = match classifier {
                    None => Err("no classifier configured".to_string()),
                    Some(c) => match tokio::time::timeout(
                        self.config.classifier_timeout,
                        c.classify(&self.agent, turn.context, turn.text),
                    )
                    .await
                    {
                        Ok(result) => result,
                        Err(_) => Err(format!(
                            "timed out after {:?}",
                            self.config.classifier_timeout
                        )),
                    },
                };
                match outcome {
                    Ok(confidence) if confidence >= threshold => Decision {
                        addressed: true,
                        reason: Reason::Classifier {
                            confidence,
                            threshold,
                        },
                    },
                    Ok(confidence) => Decision {
                        addressed: false,
                        reason: Reason::BelowThreshold {
                            confidence,
                            threshold,
                        },
                    },
                    Err(error) => Decision {
                        addressed: false,
                        reason: Reason::ClassifierUnavailable { error },
                    },
                }
            }
        };
        tracing::debug!(agent = %self.agent, speaker = turn.speaker, addressed = decision.addressed, reason = ?decision.reason, "relevance");
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::super::names::CommonWords;
    use super::*;

    fn relevance() -> Relevance {
        Relevance::new(
            "jarvis",
            NameMatcher::new(&["Jarvis"], CommonWords::built_in()),
            RelevanceConfig::default(),
        )
    }

    fn turn<'a>(text: &'a str, humans: usize, last: Option<(&'a str, u64)>) -> Turn<'a> {
        Turn {
            speaker: "ann",
            text,
            at_ms: 10_000,
            humans_present: humans,
            last_answered: last,
            context: "",
        }
    }

    struct Fixed(Result<f32, String>, Duration);
    impl Classifier for Fixed {
        fn classify<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a str,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<f32, String>> + Send + 'a>>
        {
            Box::pin(async move {
                tokio::time::sleep(self.1).await;
                self.0.clone()
            })
        }
    }

    #[tokio::test]
    async fn name_solo_and_follow_up() {
        let r = relevance();
        let d = r
            .decide(&turn("Jervis, what's up?", 3, None), Sensitivity::Low, None)
            .await;
        assert!(d.addressed && d.reason.label() == "name");
        let d = r
            .decide(&turn("what's up?", 1, None), Sensitivity::Low, None)
            .await;
        assert_eq!(d.reason, Reason::Solo);
        let d = r
            .decide(
                &turn("and tomorrow?", 3, Some(("ann", 2_000))),
                Sensitivity::Low,
                None,
            )
            .await;
        assert_eq!(d.reason, Reason::FollowUp { since_ms: 8_000 });
        let d = r
            .decide(
                &turn("and tomorrow?", 3, Some(("bob", 2_000))),
                Sensitivity::Low,
                None,
            )
            .await;
        assert_eq!(
            d.reason,
            Reason::NotAddressed,
            "someone else's follow-up needs the name"
        );
        let late = Turn {
            at_ms: 30_000,
            ..turn("and tomorrow?", 3, Some(("ann", 2_000)))
        };
        assert!(
            !r.decide(&late, Sensitivity::Low, None).await.addressed,
            "the window has closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn classifier_thresholds_and_fallback() {
        let r = relevance();
        let t = turn("what's the capital of Peru?", 3, None);
        let c = Fixed(Ok(0.6), Duration::ZERO);
        assert!(
            !r.decide(&t, Sensitivity::Medium, Some(&c)).await.addressed,
            "0.6 < medium 0.8"
        );
        assert!(
            r.decide(&t, Sensitivity::High, Some(&c)).await.addressed,
            "0.6 >= high 0.5"
        );
        assert!(
            !r.decide(&t, Sensitivity::Low, Some(&c)).await.addressed,
            "low never asks"
        );
        let slow = Fixed(Ok(1.0), Duration::from_secs(5));
        let d = r.decide(&t, Sensitivity::High, Some(&slow)).await;
        assert!(
            matches!(d.reason, Reason::ClassifierUnavailable { .. }),
            "{d:?}"
        );
        let broken = Fixed(Err("HTTP 500".into()), Duration::ZERO);
        assert!(
            !r.decide(&t, Sensitivity::High, Some(&broken))
                .await
                .addressed
        );
        // A name still works when the classifier is down.
        let named = turn("Jarvis, capital of Peru?", 3, None);
        assert!(
            r.decide(&named, Sensitivity::High, Some(&broken))
                .await
                .addressed
        );
    }
}
