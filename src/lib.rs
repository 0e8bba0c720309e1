//! errata: records the error points a tutoring AI finds in what learners
//! say, keeps every learner's error frequencies, and serves targeted
//! practice for their most frequent mistakes.

pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod startup;
pub mod store;
pub mod telemetry;
