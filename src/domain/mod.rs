//! The learner's world as pure code: validated names, error points, ranking
//! and exercise selection. Nothing here does I/O.

pub mod error_point;
pub mod exercises;
pub mod learner;
pub mod patterns;
pub mod ranking;

pub use error_point::{report_fingerprint, ErrorKey, ErrorName, ErrorPoint, NameError, MAX_POINTS};
pub use exercises::{Exercise, ExerciseBank, ExerciseKind, ExerciseSource, OwnSentence};
pub use learner::{Email, EmailError, Username, UsernameError};
pub use ranking::{ErrorFrequency, FrequencyTable};
