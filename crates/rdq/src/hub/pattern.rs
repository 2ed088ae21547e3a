//! Topics and subscription patterns.
//!
//! A topic is one or more non-empty segments joined by dots (`orders`,
//! `orders.created`), of letters, digits, `_`, `-` and `:`. A pattern is an
//! exact topic, or a topic followed by `.*`, which matches every topic that
//! starts with it and a dot: `orders.*` matches `orders.created` and
//! `orders.eu.created`, but neither `orders` nor `ordersx`.

use std::fmt;

/// A subscription: an exact topic or a prefix.
///
/// An exact topic matches itself. A topic followed by `.*` matches every
/// topic that starts with it and a dot: `orders.*` matches `orders.created`
/// and `orders.eu.created`, but neither `orders` nor `ordersx`. No other use
/// of `*` is allowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    /// For `a.b.*`: `a.b.` (the dot included); `None` for an exact topic.
    prefix: Option<usize>,
}

/// Why a topic or a pattern is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {text:?} is not valid: {why}")]
pub struct TopicError {
    what: &'static str,
    text: String,
    why: &'static str,
}

impl TopicError {
    /// What is wrong, in words.
    pub fn why(&self) -> &'static str {
        self.why
    }
}

/// Checks a topic name: one or more non-empty segments joined by dots, of
/// letters, digits, `_`, `-` and `:`; at most 255 bytes. See [`Pattern`].
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    let err = |why| TopicError {
        what: "topic",
        text: topic.to_owned(),
        why,
    };
    if topic.is_empty() {
        return Err(err("it is empty"));
    }
    if topic.len() > 255 {
        return Err(err("it is longer than 255 bytes"));
    }
    for segment in topic.split('.') {
        if segment.is_empty() {
            return Err(err(
                "it has an empty segment (two dots, or a dot at an end)",
            ));
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'))
        {
            return Err(err(
                "segments may hold only letters, digits, '_', '-' and ':' (a pattern may end in \".*\")",
            ));
        }
    }
    Ok(())
}

impl Pattern {
    /// Parses `topic` or `topic.*`.
    pub fn parse(text: &str) -> Result<Pattern, TopicError> {
        let (topic, prefix) = match text.strip_suffix(".*") {
            Some(topic) => (topic, Some(topic.len() + 1)),
            None => (text, None),
        };
        check_topic(topic).map_err(|e| TopicError {
            what: "pattern",
            text: text.to_owned(),
            why: if topic.contains('*') {
                "only an exact topic or a trailing \".*\" is allowed"
            } else {
                e.why
            },
        })?;
        Ok(Pattern {
            text: text.to_owned(),
            prefix,
        })
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        match self.prefix {
            None => topic == self.text,
            Some(n) => topic.len() > n && topic.as_bytes().starts_with(&self.text.as_bytes()[..n]),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Pattern {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_matches_below_its_dot_only() {
        let p = Pattern::parse("a.*").unwrap();
        assert!(p.matches("a.b"));
        assert!(p.matches("a.b.c"));
        assert!(!p.matches("ab"));
        assert!(!p.matches("a"));
        assert!(!p.matches("a."));
        assert!(!p.matches("b.a"));
        let exact = Pattern::parse("a.b").unwrap();
        assert!(exact.matches("a.b"));
        assert!(!exact.matches("a.b.c"));
        assert!(!exact.matches("a"));
    }

    #[test]
    fn only_exact_topics_and_trailing_wildcards_parse() {
        for bad in [
            "", "*", "a*", "a.*.b", "*.a", "a..b", ".a", "a.", "a b", "a.**", "a.*.*",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should not parse");
        }
        for good in ["a", "a.b", "a.*", "orders.eu-west.*", "x:y"] {
            assert!(Pattern::parse(good).is_ok(), "{good:?} should parse");
        }
        assert!(Pattern::parse("a.*.b")
            .unwrap_err()
            .to_string()
            .contains("trailing"));
    }
}
