//! Grading a learner's answer to an exercise, and an answer's identity.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::exercises::own_exercise_id;
use super::{ErrorKey, Grade};

/// Longest response accepted (as long as the longest correction).
pub const MAX_RESPONSE_CHARS: usize = 10_000;
/// Longest exercise id accepted.
pub const MAX_EXERCISE_ID_CHARS: usize = 200;
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// Which exercise an answer is to: a bank item (by its id) or one built
/// from a sentence the learner said (graded by that sentence's correction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExerciseRef {
    Bank(String),
    OwnSentence { utterance_id: Uuid },
}

impl ExerciseRef {
    /// What `exercise_id` refers to when it is answered for the error
    /// `key`; `None` for an own-sentence id that was not built for this
    /// error (so it is no exercise at all).
    pub fn parse(exercise_id: &str, key: &ErrorKey) -> Option<Self> {
        let Some(rest) = exercise_id.strip_prefix("utterance-") else {
            return Some(Self::Bank(exercise_id.to_owned()));
        };
        let utterance_id = Uuid::parse_str(rest.get(..36)?).ok()?;
        (own_exercise_id(utterance_id, key) == exercise_id)
            .then_some(Self::OwnSentence { utterance_id })
    }
}

/// A text as answers are compared: case, whitespace around and between
/// words, and punctuation at the end do not matter.
pub fn normalise(text: &str) -> String {
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    words
        .trim_end_matches(|c: char| c.is_ascii_punctuation() || "…。！？".contains(c))
        .trim_end()
        .to_lowercase()
}

/// Whether `response` is the expected answer.
pub fn is_correct(expected: &str, response: &str) -> bool {
    normalise(expected) == normalise(response)
}

/// The grade of a response graded by errata.
pub fn grade_of(correct: bool) -> Grade {
    if correct {
        Grade::Good
    } else {
        Grade::Again
    }
}

/// An answer's id follows from its request's identity, so a retry finds
/// the first answer: the `Idempotency-Key` when there is one, else the
/// exercise and the time the client says it was answered; a request with
/// neither is new each time.
pub fn answer_id(
    user_id: Uuid,
    idempotency_key: Option<&str>,
    exercise_id: &str,
    answered_at: Option<DateTime<Utc>>,
) -> Uuid {
    match (idempotency_key, answered_at) {
        (Some(key), _) => Uuid::new_v5(&user_id, format!("key/{key}").as_bytes()),
        (None, Some(at)) => Uuid::new_v5(
            &user_id,
            format!("answer/{}/{exercise_id}", at.timestamp_millis()).as_bytes(),
        ),
        (None, None) => Uuid::now_v7(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ErrorKey {
        ErrorKey {
            category: "grammar".into(),
            subcategory: "verb tense".into(),
        }
    }

    #[test]
    fn case_spacing_and_final_punctuation_do_not_matter() {
        assert!(is_correct(
            "Yesterday I went home.",
            "  yesterday i WENT   home "
        ));
        assert!(is_correct("Does she know?", "does she know"));
        assert!(!is_correct(
            "Yesterday I went home.",
            "Yesterday I go home."
        ));
        assert!(!is_correct("went", ""));
    }

    #[test]
    fn own_sentence_ids_are_checked_against_their_error() {
        let utterance_id = Uuid::now_v7();
        let id = own_exercise_id(utterance_id, &key());
        assert_eq!(
            ExerciseRef::parse(&id, &key()),
            Some(ExerciseRef::OwnSentence { utterance_id })
        );
        let other = ErrorKey {
            subcategory: "articles".into(),
            ..key()
        };
        assert_eq!(ExerciseRef::parse(&id, &other), None);
        assert_eq!(ExerciseRef::parse("utterance-nope", &key()), None);
        assert_eq!(
            ExerciseRef::parse("grammar-sva-1", &key()),
            Some(ExerciseRef::Bank("grammar-sva-1".into()))
        );
    }

    #[test]
    fn a_retry_has_the_first_answers_id() {
        let user = Uuid::now_v7();
        let at = Utc::now();
        assert_eq!(
            answer_id(user, Some("k"), "a", None),
            answer_id(user, Some("k"), "b", Some(at))
        );
        assert_eq!(
            answer_id(user, None, "a", Some(at)),
            answer_id(user, None, "a", Some(at))
        );
        assert_ne!(
            answer_id(user, None, "a", Some(at)),
            answer_id(user, None, "b", Some(at))
        );
        assert_ne!(
            answer_id(user, None, "a", None),
            answer_id(user, None, "a", None)
        );
    }
}
