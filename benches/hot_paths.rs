//! Micro-benchmarks of the pure code every request runs: name normalisation
//! and fingerprints (ingest), ranking a frequency table, exercise selection
//! and encoding the practice response (generate-exercise).
//!
//!   cargo bench --bench hot_paths

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use errata::domain::{
    report_fingerprint, Correction, ErrorFrequency, ErrorKey, ErrorName, ErrorPoint, ExerciseBank,
    FrequencyTable, OwnSentence,
};
use errata::http::exercises::{PracticeBody, TopErrorBody};
use uuid::Uuid;

const NAMES: &[(&str, &str)] = &[
    ("Grammar", "Subject-Verb Agreement"),
    ("  grammar ", "verb   tense"),
    ("Vocabulary", "Word Choice"),
    ("Pronunciation", "Th Sounds"),
    ("Fluency", "Filler Words"),
    ("Gramática", "Concordância Verbal"),
];

fn point(category: &str, subcategory: &str) -> ErrorPoint {
    ErrorPoint {
        category: ErrorName::parse(category).expect("valid"),
        subcategory: ErrorName::parse(subcategory).expect("valid"),
        correction: Correction::default(),
    }
}

fn frequency(i: usize) -> ErrorFrequency {
    let (category, subcategory) = (format!("Category {}", i % 7), format!("Subcategory {i}"));
    ErrorFrequency {
        key: ErrorKey {
            category: category.to_lowercase(),
            subcategory: subcategory.to_lowercase(),
        },
        category,
        subcategory,
        // Many ties, so the tie-breaks run too.
        frequency: (i % 13) as i64 + 1,
        last_seen: DateTime::<Utc>::from_timestamp(1_700_000_000 + (i % 5) as i64, 0),
    }
}

fn normalisation(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalisation");
    group.bench_function("ErrorName::parse", |b| {
        b.iter(|| {
            for (category, subcategory) in NAMES {
                black_box(ErrorName::parse(black_box(category)).ok());
                black_box(ErrorName::parse(black_box(subcategory)).ok());
            }
        })
    });
    let points: Vec<ErrorPoint> = NAMES[..3].iter().map(|(c, s)| point(c, s)).collect();
    let utterance = Uuid::now_v7();
    group.bench_function("report_fingerprint/3 points, no key", |b| {
        b.iter(|| report_fingerprint(black_box(utterance), black_box(&points), None))
    });
    group.bench_function("report_fingerprint/3 points, Idempotency-Key", |b| {
        b.iter(|| {
            report_fingerprint(
                black_box(utterance),
                black_box(&points),
                Some(black_box("0f6c1a2e-4b7d-4c1e-9a55-3b2f1d6e7c88")),
            )
        })
    });
    group.finish();
}

fn ranking(c: &mut Criterion) {
    let mut group = c.benchmark_group("ranking");
    for size in [50, 1000] {
        let table: FrequencyTable = (0..size).map(frequency).collect();
        group.bench_with_input(BenchmarkId::new("top 5", size), &table, |b, table| {
            b.iter(|| black_box(table.top(black_box(5))))
        });
        group.bench_with_input(BenchmarkId::new("ranked", size), &table, |b, table| {
            b.iter(|| black_box(table.ranked()))
        });
    }
    group.finish();
}

fn practice(bank: &ExerciseBank, top: &[ErrorFrequency], own: &[OwnSentence]) -> PracticeBody {
    PracticeBody {
        user_id: Uuid::nil(),
        top_errors: top.iter().map(|e| TopErrorBody::new(e, None)).collect(),
        exercises: top
            .iter()
            .flat_map(|error| bank.exercises_for(error, own, 2, 7))
            .collect(),
    }
}

fn exercises(c: &mut Criterion) {
    let bank = ExerciseBank::shipped().expect("the shipped bank loads");
    let known = {
        let p = point("Grammar", "Subject-Verb Agreement");
        ErrorFrequency {
            key: p.key(),
            category: p.category.as_str().into(),
            subcategory: p.subcategory.as_str().into(),
            frequency: 12,
            last_seen: None,
        }
    };
    let unknown = frequency(3);
    let own: Vec<OwnSentence> = (0..3)
        .map(|i| OwnSentence {
            utterance_id: Uuid::now_v7(),
            text: format!("She go to work by bus every day, number {i}."),
            correction: format!("She goes to work by bus every day, number {i}."),
            explanation: None,
        })
        .collect();
    let mut group = c.benchmark_group("exercises");
    group.bench_function("exercises_for/bank subcategory", |b| {
        b.iter(|| bank.exercises_for(black_box(&known), &[], 2, black_box(5)))
    });
    group.bench_function("exercises_for/bank + 3 own sentences", |b| {
        b.iter(|| bank.exercises_for(black_box(&known), &own, 2, black_box(5)))
    });
    group.bench_function("exercises_for/fallback", |b| {
        b.iter(|| bank.exercises_for(black_box(&unknown), &[], 2, black_box(5)))
    });
    group.finish();

    let top: Vec<ErrorFrequency> = std::iter::once(known)
        .chain((0..4).map(frequency))
        .collect();
    let mut group = c.benchmark_group("encoding");
    group.bench_function("build PracticeBody (top 5, 2 each)", |b| {
        b.iter(|| black_box(practice(&bank, black_box(&top), &own)))
    });
    let body = practice(&bank, &top, &own);
    group.bench_function("serde_json PracticeBody (top 5, 2 each)", |b| {
        b.iter(|| serde_json::to_vec(black_box(&body)).expect("encodes"))
    });
    group.finish();
}

criterion_group!(benches, normalisation, ranking, exercises);
criterion_main!(benches);
