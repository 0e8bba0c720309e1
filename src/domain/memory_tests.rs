use chrono::TimeZone;

use super::*;
use crate::domain::ErrorFrequency;

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

fn review(n: u128, at: DateTime<Utc>, grade: Grade, kind: ReviewKind) -> Review {
    Review {
        review_id: Uuid::from_u128(n),
        at,
        grade,
        kind,
    }
}

fn answer(n: u128, at: DateTime<Utc>, grade: Grade) -> Review {
    review(n, at, grade, ReviewKind::Answer)
}

fn lapse(n: u128, at: DateTime<Utc>) -> Review {
    review(n, at, Grade::Again, ReviewKind::Lapse)
}

/// The crate's own steps, taken one by one with the days counted by hand.
fn hand_fold(steps: &[(Option<u32>, Grade)]) -> Fsrs {
    let fsrs = FSRS::new(&DEFAULT_PARAMETERS).unwrap();
    let mut state = None;
    for (elapsed, grade) in steps {
        let next = fsrs
            .next_states(state, DESIRED_RETENTION, elapsed.unwrap_or(0))
            .unwrap();
        state = Some(
            match grade {
                Grade::Again => next.again,
                Grade::Hard => next.hard,
                Grade::Good => next.good,
                Grade::Easy => next.easy,
            }
            .memory,
        );
    }
    state.unwrap()
}

fn close(a: f64, b: f32) -> bool {
    (a - f64::from(b)).abs() < 1e-4
}

#[test]
fn a_first_good_answer_starts_from_the_published_defaults() {
    let model = MemoryModel::standard();
    let s = model
        .fold([answer(1, at(1, 10), Grade::Good)], Timezone::UTC)
        .unwrap();
    assert!(close(s.stability, 2.3065), "{s:?}");
    assert!(close(s.difficulty, 2.118104), "{s:?}");
    assert_eq!((s.reviews, s.lapses), (1, 0));
    // 2.3 days rounds to 2: due at the start of the 3rd.
    assert_eq!(s.due, at(3, 0));
}

#[test]
fn the_fold_equals_the_steps_taken_by_hand_in_any_order() {
    let history = vec![
        lapse(1, at(1, 9)),
        answer(2, at(1, 18), Grade::Good),
        answer(3, at(4, 8), Grade::Hard),
        lapse(4, at(9, 23)),
        answer(5, at(20, 12), Grade::Easy),
    ];
    let by_hand = hand_fold(&[
        (None, Grade::Again),
        (Some(0), Grade::Good),
        (Some(3), Grade::Hard),
        (Some(5), Grade::Again),
        (Some(11), Grade::Easy),
    ]);
    let model = MemoryModel::standard();
    let mut shuffled = history.clone();
    for rotation in 0..history.len() {
        shuffled.rotate_left(1);
        if rotation % 2 == 1 {
            shuffled.reverse();
        }
        let s = model.fold(shuffled.clone(), Timezone::UTC).unwrap();
        assert!(close(s.stability, by_hand.stability), "{s:?} {by_hand:?}");
        assert!(close(s.difficulty, by_hand.difficulty));
        assert_eq!((s.reviews, s.lapses), (5, 2));
        assert_eq!(s.last_review, at(20, 12));
    }
}

#[test]
fn a_review_stored_twice_counts_once_at_its_earliest_time() {
    let model = MemoryModel::standard();
    let once = model
        .fold(
            [lapse(1, at(1, 9)), answer(2, at(2, 9), Grade::Good)],
            Timezone::UTC,
        )
        .unwrap();
    let twice = model
        .fold(
            [
                answer(2, at(2, 9), Grade::Good),
                lapse(1, at(1, 9)),
                answer(2, at(2, 10), Grade::Good),
            ],
            Timezone::UTC,
        )
        .unwrap();
    assert_eq!(once, twice);
}

#[test]
fn lapses_count_once_per_day_of_the_learners_time_zone() {
    let model = MemoryModel::standard();
    // 14:00 and 16:00 UTC are one UTC day but two Tokyo days (23:00 on
    // the 1st, 01:00 on the 2nd).
    let lapses = [lapse(1, at(1, 14)), lapse(2, at(1, 16))];
    let utc = model.fold(lapses, Timezone::UTC).unwrap();
    assert_eq!((utc.reviews, utc.lapses), (1, 1));
    let tokyo = Timezone::parse("Asia/Tokyo").unwrap();
    let local = model.fold(lapses, tokyo).unwrap();
    assert_eq!((local.reviews, local.lapses), (2, 2));
    // Answers graded again are never merged.
    let answers = [
        answer(1, at(1, 14), Grade::Again),
        answer(2, at(1, 16), Grade::Again),
    ];
    assert_eq!(model.fold(answers, Timezone::UTC).unwrap().lapses, 2);
}

#[test]
fn due_dates_begin_at_the_learners_midnight() {
    let model = MemoryModel::standard();
    let tokyo = Timezone::parse("Asia/Tokyo").unwrap();
    let s = model
        .fold([answer(1, at(1, 10), Grade::Good)], tokyo)
        .unwrap();
    // 19:00 on the 1st in Tokyo, due two Tokyo days on: the 3rd at 00:00
    // JST, 15:00 UTC on the 2nd.
    assert_eq!(s.due, at(2, 15));
}

#[test]
fn retrievability_falls_with_time_and_is_ninety_percent_at_stability() {
    let model = MemoryModel::standard();
    let s = model
        .fold([answer(1, at(1, 0), Grade::Good)], Timezone::UTC)
        .unwrap();
    assert!((model.retrievability(&s, at(1, 0)) - 1.0).abs() < 1e-6);
    let at_stability = at(1, 0) + TimeDelta::milliseconds((s.stability * 86_400_000.0) as i64);
    assert!((model.retrievability(&s, at_stability) - 0.9).abs() < 1e-3);
    assert!(model.retrievability(&s, at(20, 0)) < 0.9);
}

#[test]
fn due_ranking_puts_the_most_forgotten_first_and_breaks_ties_by_recency() {
    let key = |name: &str| ErrorKey {
        category: "grammar".into(),
        subcategory: name.into(),
    };
    let scored = |name: &str, score: f64| ScoredError {
        error: ErrorFrequency {
            key: key(name),
            category: "Grammar".into(),
            subcategory: name.into(),
            frequency: 1,
            last_seen: None,
        },
        score,
    };
    let model = MemoryModel::standard();
    let fresh = model
        .fold([answer(1, at(20, 0), Grade::Easy)], Timezone::UTC)
        .unwrap();
    let stale = model
        .fold([answer(2, at(1, 0), Grade::Hard)], Timezone::UTC)
        .unwrap();
    let states = HashMap::from([(key("fresh"), fresh), (key("stale"), stale)]);
    let recent = vec![
        scored("fresh", 9.0),
        scored("stale", 5.0),
        scored("unseen-a", 3.0),
        scored("unseen-b", 1.0),
    ];
    let ranked = rank_due(recent, &states, at(21, 0), 10);
    let names: Vec<_> = ranked
        .iter()
        .map(|s| s.error.subcategory.as_str())
        .collect();
    assert_eq!(names, ["unseen-a", "unseen-b", "stale", "fresh"]);
    assert_eq!(ranked[0].score, 0.0);
    assert!(ranked[2].score < ranked[3].score);
}
