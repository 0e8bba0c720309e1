//! The learner's world as pure code: validated names, error points, ranking
//! and exercise selection. Nothing here does I/O.

pub mod answers;
pub mod error_point;
pub mod exercises;
pub mod learner;
pub mod memory;
pub mod patterns;
pub mod progress;
pub mod rank;
pub mod ranking;
pub mod timezone;
pub mod weeks;

pub use answers::{is_correct, normalise, ExerciseRef};
pub use error_point::{
    report_fingerprint, Correction, ErrorKey, ErrorName, ErrorPoint, NameError, MAX_POINTS,
};
pub use exercises::{
    own_exercise_id, Exercise, ExerciseBank, ExerciseKind, ExerciseSource, OwnSentence,
};
pub use learner::{Email, EmailError, Username, UsernameError};
pub use memory::{lapse_id, rank_due, Grade, MemoryModel, MemoryState, Review, ReviewKind};
pub use progress::{rank_recent, weekly_progress, ScoredError, WeekCount, WeekProgress};
pub use rank::{Rank, WeeklyHistory};
pub use ranking::{ErrorFrequency, FrequencyTable};
pub use timezone::{Timezone, TimezoneError};
pub use weeks::{week_start, Decay};
