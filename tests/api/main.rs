//! The HTTP contract suite: every endpoint of the product contract, over
//! real HTTP, against whichever store `ERRATA_TEST_STORE` names.

mod concurrency;
mod exercises;
mod lifecycle;
mod limits;
mod memory;
mod ops;
mod practice;
mod progress;
mod recording;
mod resources;
