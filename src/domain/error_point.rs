//! Error points as the tutoring AI reports them, and the identity errata
//! counts them under.

use std::fmt;

use uuid::Uuid;

/// Longest accepted category or subcategory name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Most error points one report may carry (so a request's events are
/// numbered below this).
pub const MAX_POINTS: usize = 64;
/// Longest accepted correction (of a point or of the whole utterance), in
/// characters: as long as the longest utterance.
pub const MAX_CORRECTION_CHARS: usize = 10_000;
/// Longest accepted explanation of a correction, in characters.
pub const MAX_EXPLANATION_CHARS: usize = 1_000;

/// Why a category or subcategory name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must contain at least one non-whitespace character")]
    Empty,
    #[error("must be at most {MAX_NAME_CHARS} characters")]
    TooLong,
}

/// A category or subcategory name, cleaned: trimmed, inner whitespace runs
/// collapsed to one space. Two names are the same error when their keys are
/// equal; the spelling is kept for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorName {
    spelling: String,
    key: String,
}

impl ErrorName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let spelling = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if spelling.is_empty() {
            return Err(NameError::Empty);
        }
        if spelling.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        let key = spelling.to_lowercase();
        Ok(Self { spelling, key })
    }

    /// The cleaned spelling as reported.
    pub fn as_str(&self) -> &str {
        &self.spelling
    }

    /// The case-insensitive identity of the name.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spelling)
    }
}

/// The identity of an error type: what frequencies are counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorKey {
    pub category: String,
    pub subcategory: String,
}

impl ErrorKey {
    /// An unambiguous single-string form, safe for any character in either
    /// name (`:`, `{`, quotes, newlines): each part is length-prefixed.
    pub fn encode(&self) -> String {
        format!(
            "{}:{}{}",
            self.category.len(),
            self.category,
            self.subcategory
        )
    }

    /// Inverse of [`ErrorKey::encode`]; `None` for anything it did not produce.
    pub fn decode(encoded: &str) -> Option<Self> {
        let (len, rest) = encoded.split_once(':')?;
        let len: usize = len.parse().ok()?;
        if !rest.is_char_boundary(len) {
            return None;
        }
        let (category, subcategory) = rest.split_at(len);
        Some(Self {
            category: category.to_owned(),
            subcategory: subcategory.to_owned(),
        })
    }
}

/// What the AI proposes for one error point: the corrected sentence (or
/// phrase) and, when it gave one, why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correction {
    /// The corrected sentence or phrase, when known.
    pub text: Option<String>,
    /// The AI's explanation, when given.
    pub explanation: Option<String>,
}

impl Correction {
    /// Checks the lengths the contract allows: a correction of 1 to
    /// 10,000 characters, an explanation of at most 1,000.
    pub fn check_text(text: &str) -> Result<(), &'static str> {
        check_length(text, 1, MAX_CORRECTION_CHARS)
    }

    pub fn check_explanation(text: &str) -> Result<(), &'static str> {
        check_length(text, 0, MAX_EXPLANATION_CHARS)
    }
}

fn check_length(text: &str, min: usize, max: usize) -> Result<(), &'static str> {
    let chars = text.chars().count();
    if chars < min {
        Err("too_short")
    } else if chars > max {
        Err("too_long")
    } else {
        Ok(())
    }
}

/// One error the AI found in an utterance. The correction is an
/// annotation, not part of the error's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPoint {
    pub category: ErrorName,
    pub subcategory: ErrorName,
    pub correction: Correction,
}

impl ErrorPoint {
    pub fn key(&self) -> ErrorKey {
        ErrorKey {
            category: self.category.key().to_owned(),
            subcategory: self.subcategory.key().to_owned(),
        }
    }
}

/// Namespace of report fingerprints (UUID v5), fixed forever: stored
/// fingerprints must keep matching retries after an upgrade.
const FINGERPRINT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_3a0e_8c4b_4f7a_9b2e_51c0_d7e4_a913);

/// The identity of an error report for deduplication. With an
/// `Idempotency-Key` the key alone identifies the request; without one, the
/// utterance and its normalised error list do (order does not matter, but a
/// point reported twice is two points). Corrections and explanations are
/// not part of it: they annotate the errors an utterance had, so a second
/// analysis of the same utterance that words its correction differently
/// still counts those errors once (the first recording's corrections stay),
/// and fingerprints stored before corrections existed keep matching.
pub fn report_fingerprint(
    utterance_id: Uuid,
    points: &[ErrorPoint],
    idempotency_key: Option<&str>,
) -> Uuid {
    let identity = match idempotency_key {
        Some(key) => format!("key\0{key}"),
        None => {
            let mut keys: Vec<String> = points.iter().map(|p| p.key().encode()).collect();
            keys.sort_unstable();
            let mut identity = format!("utterance\0{utterance_id}");
            for key in keys {
                identity.push_str(&format!("\0{}:{key}", key.len()));
            }
            identity
        }
    };
    Uuid::new_v5(&FINGERPRINT_NAMESPACE, identity.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_inner_whitespace_collapsed() {
        let name = ErrorName::parse("  Subject-Verb \t\n Agreement ").unwrap();
        assert_eq!(name.as_str(), "Subject-Verb Agreement");
        assert_eq!(name.key(), "subject-verb agreement");
    }

    #[test]
    fn names_compare_case_insensitively_including_non_ascii() {
        let a = ErrorName::parse("ÜBUNG Ärger").unwrap();
        let b = ErrorName::parse("übung ärger").unwrap();
        assert_eq!(a.key(), b.key());
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn blank_and_overlong_names_are_refused() {
        assert_eq!(ErrorName::parse(" \t "), Err(NameError::Empty));
        assert_eq!(ErrorName::parse(""), Err(NameError::Empty));
        assert!(ErrorName::parse(&"é".repeat(64)).is_ok());
        assert_eq!(ErrorName::parse(&"é".repeat(65)), Err(NameError::TooLong));
    }

    #[test]
    fn length_is_counted_after_collapsing_whitespace() {
        let raw = format!("  {}   {}  ", "a".repeat(31), "b".repeat(32));
        assert_eq!(ErrorName::parse(&raw).unwrap().as_str().chars().count(), 64);
    }

    #[test]
    fn encoded_keys_round_trip_with_separators_in_names() {
        for (c, s) in [
            ("a:b", "c"),
            ("a", "b:c"),
            ("{user}", "}{"),
            ("12:x", ""),
            ("日本語", "ñ:{}"),
        ] {
            let key = ErrorKey {
                category: c.into(),
                subcategory: s.into(),
            };
            assert_eq!(ErrorKey::decode(&key.encode()), Some(key.clone()));
        }
        let a = ErrorKey {
            category: "a:b".into(),
            subcategory: "c".into(),
        };
        let b = ErrorKey {
            category: "a".into(),
            subcategory: "b:c".into(),
        };
        assert_ne!(a.encode(), b.encode());
    }

    fn point(c: &str, s: &str) -> ErrorPoint {
        ErrorPoint {
            category: ErrorName::parse(c).unwrap(),
            subcategory: ErrorName::parse(s).unwrap(),
            correction: Correction::default(),
        }
    }

    #[test]
    fn fingerprints_ignore_order_case_and_spacing_but_not_multiplicity() {
        let u = Uuid::new_v4();
        let a = [
            point("Grammar", "Articles"),
            point("Vocabulary", "Word Choice"),
        ];
        let b = [
            point("vocabulary", " word  choice"),
            point("GRAMMAR", "articles"),
        ];
        assert_eq!(
            report_fingerprint(u, &a, None),
            report_fingerprint(u, &b, None)
        );
        let twice = [point("Grammar", "Articles"), point("Grammar", "Articles")];
        let once = [point("Grammar", "Articles")];
        assert_ne!(
            report_fingerprint(u, &twice, None),
            report_fingerprint(u, &once, None)
        );
        assert_ne!(
            report_fingerprint(u, &a, None),
            report_fingerprint(Uuid::new_v4(), &a, None)
        );
    }

    #[test]
    fn corrections_are_not_part_of_the_identity() {
        let u = Uuid::new_v4();
        let plain = [point("Grammar", "Articles")];
        let mut corrected = plain.clone();
        corrected[0].correction = Correction {
            text: Some("I saw a cat.".into()),
            explanation: Some("A singular count noun takes an article.".into()),
        };
        assert_eq!(
            report_fingerprint(u, &plain, None),
            report_fingerprint(u, &corrected, None)
        );
    }

    #[test]
    fn correction_lengths_are_checked_in_characters() {
        assert!(Correction::check_text(&"é".repeat(MAX_CORRECTION_CHARS)).is_ok());
        assert_eq!(
            Correction::check_text(&"é".repeat(MAX_CORRECTION_CHARS + 1)),
            Err("too_long")
        );
        assert_eq!(Correction::check_text(""), Err("too_short"));
        assert!(Correction::check_explanation("").is_ok());
        assert_eq!(
            Correction::check_explanation(&"x".repeat(MAX_EXPLANATION_CHARS + 1)),
            Err("too_long")
        );
    }

    #[test]
    fn an_idempotency_key_alone_identifies_the_request() {
        let a = [point("Grammar", "Articles")];
        let b = [point("Fluency", "Fillers")];
        let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            report_fingerprint(u, &a, Some("k1")),
            report_fingerprint(v, &b, Some("k1"))
        );
        assert_ne!(
            report_fingerprint(u, &a, Some("k1")),
            report_fingerprint(u, &a, Some("k2"))
        );
        assert_ne!(
            report_fingerprint(u, &a, Some("k1")),
            report_fingerprint(u, &a, None)
        );
    }

    #[test]
    fn separators_inside_names_cannot_forge_another_list() {
        let u = Uuid::new_v4();
        let a = [point("a", "b"), point("c", "d")];
        let b = [point("a", "b\0c:d"), point("c", "d")];
        let c = [point("a:b", "c"), point("d", "e")];
        let d = [point("a", "b:c"), point("d", "e")];
        assert_ne!(
            report_fingerprint(u, &a, None),
            report_fingerprint(u, &b, None)
        );
        assert_ne!(
            report_fingerprint(u, &c, None),
            report_fingerprint(u, &d, None)
        );
    }

    #[test]
    fn decode_rejects_foreign_strings() {
        assert_eq!(ErrorKey::decode("nonsense"), None);
        assert_eq!(ErrorKey::decode("99:short"), None);
        assert_eq!(ErrorKey::decode("1:é"), None);
    }
}
