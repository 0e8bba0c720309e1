//! How well each practice ranking (`frequency`, `recent`, `due`) predicts
//! a learner's next answer, and how many reviews each needs to halve the
//! learners' error rate, on simulated learners whose forgetting is *not*
//! FSRS's: exponential, with a half-life per learner and error that grows
//! with successful practice and shrinks with lapses. Seeded, deterministic:
//!
//!   cargo bench --bench practice_simulation -- [seed] [learners]
//!
//! It calls the service's own code: `MemoryModel` (the fold and
//! retrievability behind `rank=due`), `Decay`/`week_start`/`weeks_back`
//! (the weights behind `rank=recent`). docs/practice.md shows its output.

use chrono::{DateTime, Duration, TimeZone, Utc};
use errata::domain::weeks::weeks_back;
use errata::domain::{
    week_start, Decay, Grade, MemoryModel, MemoryState, Review, ReviewKind, Timezone,
};
use uuid::Uuid;

const ERRORS: usize = 8;
const SPEECH_ONLY_DAYS: i64 = 14;
const DAYS: i64 = 180;
const ANSWERS_PER_DAY: usize = 2;

/// splitmix64: a small, seeded, portable generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n
    }
}

/// The truth about one learner's error: exponential forgetting.
#[derive(Clone)]
struct Trace {
    half_life_days: f64,
    last: DateTime<Utc>,
    /// How often the learner's speech needs the construction (per day).
    usage: f64,
}

impl Trace {
    fn recall(&self, now: DateTime<Utc>) -> f64 {
        let days = (now - self.last).num_seconds() as f64 / 86_400.0;
        2f64.powf(-days / self.half_life_days)
    }
    fn practised(&mut self, now: DateTime<Utc>, correct: bool, growth: f64) {
        let spacing = 1.0 + (1.0 - self.recall(now));
        self.half_life_days = if correct {
            (self.half_life_days * growth * spacing).min(365.0)
        } else {
            (self.half_life_days * 0.5).max(0.2)
        };
        self.last = now;
    }
}

/// What errata knows about one error: its lapses and its reviews.
#[derive(Clone, Default)]
struct Seen {
    lapses: Vec<DateTime<Utc>>,
    reviews: Vec<Review>,
    state: Option<MemoryState>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ranking {
    Frequency,
    Recent,
    Due,
}

const RANKINGS: [Ranking; 3] = [Ranking::Frequency, Ranking::Recent, Ranking::Due];

impl Ranking {
    fn name(self) -> &'static str {
        match self {
            Self::Frequency => "frequency",
            Self::Recent => "recent (14-day half-life)",
            Self::Due => "due (FSRS retrievability)",
        }
    }

    /// The ranking's score: higher = more in need of practice.
    fn need(self, seen: &Seen, now: DateTime<Utc>) -> f64 {
        match self {
            Self::Frequency => seen.lapses.len() as f64,
            Self::Recent => {
                let decay = Decay::new(14);
                let current = week_start(now);
                seen.lapses
                    .iter()
                    .map(|t| weeks_back(current, week_start(*t)))
                    .filter(|back| *back < i64::from(decay.lookback_weeks()))
                    .map(|back| decay.weight(back))
                    .sum()
            }
            Self::Due => match &seen.state {
                Some(s) => 1.0 - MemoryModel::standard().retrievability(s, now),
                None => 1.0,
            },
        }
    }
}

struct Learner {
    traces: Vec<Trace>,
    seen: Vec<Seen>,
    growth: f64,
    rng: Rng,
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
}

impl Learner {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let ability = (0.4 * rng.normal()).exp();
        let traces = (0..ERRORS)
            .map(|e| Trace {
                half_life_days: (0.6 * rng.normal()).exp() * ability * 1.5,
                last: start(),
                usage: 0.9 / (1.0 + e as f64 * 0.35),
            })
            .collect();
        Self {
            traces,
            seen: vec![Seen::default(); ERRORS],
            growth: 1.6 + 0.4 * rng.unit(),
            rng,
        }
    }

    /// The learner speaks: each construction used may come out wrong.
    fn speak(&mut self, day: i64) {
        let at = start() + Duration::days(day) + Duration::hours(9 + self.rng.below(10) as i64);
        for e in 0..ERRORS {
            let used = self.rng.unit() < self.traces[e].usage;
            if used && self.rng.unit() > self.traces[e].recall(at) {
                // The mistake reminds the learner, a little.
                self.traces[e].practised(at, false, self.growth);
                let seen = &mut self.seen[e];
                seen.lapses.push(at);
                let same_day = seen
                    .reviews
                    .iter()
                    .any(|r| r.kind == ReviewKind::Lapse && r.at.date_naive() == at.date_naive());
                if !same_day {
                    seen.reviews.push(Review {
                        review_id: Uuid::from_u128(u128::from(self.rng.next())),
                        at,
                        grade: Grade::Again,
                        kind: ReviewKind::Lapse,
                    });
                    refold(seen);
                }
            }
        }
    }

    /// Answers an exercise for error `e`; returns whether it was right.
    fn answer(&mut self, e: usize, at: DateTime<Utc>) -> bool {
        let correct = self.rng.unit() < self.traces[e].recall(at);
        self.traces[e].practised(at, correct, self.growth);
        let seen = &mut self.seen[e];
        seen.reviews.push(Review {
            review_id: Uuid::from_u128(u128::from(self.rng.next())),
            at,
            grade: if correct { Grade::Good } else { Grade::Again },
            kind: ReviewKind::Answer,
        });
        refold(seen);
        correct
    }

    /// Errors errata knows of (heard at least once).
    fn known(&self) -> Vec<usize> {
        (0..ERRORS)
            .filter(|e| !self.seen[*e].lapses.is_empty())
            .collect()
    }

    /// The expected share of constructions used that come out wrong.
    fn error_rate(&self, now: DateTime<Utc>) -> f64 {
        let used: f64 = self.traces.iter().map(|t| t.usage).sum();
        self.traces
            .iter()
            .map(|t| t.usage * (1.0 - t.recall(now)))
            .sum::<f64>()
            / used
    }
}

fn refold(seen: &mut Seen) {
    seen.state = MemoryModel::standard().fold(seen.reviews.iter().copied(), Timezone::UTC);
}

/// One prediction: each ranking's need score, and the outcome.
struct Observation {
    needs: [f64; 3],
    correct: bool,
    day: i64,
}

/// Histories where exercises are picked at random among known errors,
/// so that no ranking chose the data it is judged on.
fn observe(learners: usize, seed: u64) -> Vec<Observation> {
    let mut out = Vec::new();
    for l in 0..learners {
        let mut learner = Learner::new(seed ^ (l as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        for day in 0..DAYS {
            learner.speak(day);
            if day < SPEECH_ONLY_DAYS {
                continue;
            }
            let known = learner.known();
            if known.is_empty() {
                continue;
            }
            for slot in 0..ANSWERS_PER_DAY {
                let e = known[learner.rng.below(known.len())];
                let at = start() + Duration::days(day) + Duration::hours(20 + slot as i64);
                let needs = RANKINGS.map(|r| r.need(&learner.seen[e], at));
                let correct = learner.answer(e, at);
                out.push(Observation {
                    needs,
                    correct,
                    day,
                });
            }
        }
    }
    out
}

/// A probability of a correct answer from a need score: the due score is
/// one already (1 − retrievability); the others get the logistic curve
/// p = σ(a + b·ln(1 + need)) fitted on the first half of the days.
fn probabilities(obs: &[Observation], r: usize) -> Vec<f64> {
    if RANKINGS[r] == Ranking::Due {
        return obs.iter().map(|o| 1.0 - o.needs[r]).collect();
    }
    let train: Vec<&Observation> = obs.iter().filter(|o| o.day < DAYS / 2).collect();
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..300 {
        let (mut ga, mut gb) = (0.0, 0.0);
        for o in &train {
            let x = (1.0 + o.needs[r]).ln();
            let p = 1.0 / (1.0 + (-(a + b * x)).exp());
            let y = f64::from(u8::from(o.correct));
            ga += p - y;
            gb += (p - y) * x;
        }
        let n = train.len() as f64;
        a -= 0.5 * ga / n;
        b -= 0.5 * gb / n;
    }
    obs.iter()
        .map(|o| 1.0 / (1.0 + (-(a + b * (1.0 + o.needs[r]).ln())).exp()))
        .collect()
}

struct Scores {
    log_loss: f64,
    auc: f64,
    rmse_bins: f64,
}

fn score(p: &[f64], y: &[bool]) -> Scores {
    let n = p.len() as f64;
    let log_loss = p
        .iter()
        .zip(y)
        .map(|(p, y)| {
            let p = p.clamp(1e-6, 1.0 - 1e-6);
            if *y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / n;
    // AUC: the chance a random correct answer was predicted higher than a
    // random wrong one (ties count half), from ranks.
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && p[order[j + 1]] == p[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|k| y[order[*k]]).count() as f64 * mid;
        i = j + 1;
    }
    let pos = y.iter().filter(|y| **y).count() as f64;
    let neg = n - pos;
    let auc = (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg);
    // Calibration: predictions in 20 bins, each bin's mean prediction
    // against its share correct, weighted by the bin's size.
    let mut bins = [(0.0, 0.0, 0.0); 20];
    for (p, y) in p.iter().zip(y) {
        let b = ((p * 20.0) as usize).min(19);
        bins[b].0 += p;
        bins[b].1 += f64::from(u8::from(*y));
        bins[b].2 += 1.0;
    }
    let rmse_bins = (bins
        .iter()
        .filter(|b| b.2 > 0.0)
        .map(|(p, y, c)| (p / c - y / c).powi(2) * c)
        .sum::<f64>()
        / n)
        .sqrt();
    Scores {
        log_loss,
        auc,
        rmse_bins,
    }
}

/// Learners practising what `ranking` puts first; how many answers each
/// learner needs, on average, until the population's error rate is half
/// what it was when practice began (`None`: not within the run).
fn reviews_to_halve(ranking: Ranking, learners: usize, seed: u64) -> Option<f64> {
    let mut people: Vec<Learner> = (0..learners)
        .map(|l| Learner::new(seed ^ (l as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)))
        .collect();
    let mut baseline = None;
    let mut answers = 0usize;
    for day in 0..DAYS {
        let noon = start() + Duration::days(day) + Duration::hours(12);
        for learner in &mut people {
            learner.speak(day);
        }
        if day < SPEECH_ONLY_DAYS {
            continue;
        }
        let rate = people.iter().map(|l| l.error_rate(noon)).sum::<f64>() / people.len() as f64;
        match baseline {
            None => baseline = Some(rate),
            Some(b) if rate <= b / 2.0 => return Some(answers as f64 / learners as f64),
            Some(_) => {}
        }
        for learner in &mut people {
            for slot in 0..ANSWERS_PER_DAY {
                let at = start() + Duration::days(day) + Duration::hours(20 + slot as i64);
                let pick = learner.known().into_iter().max_by(|a, b| {
                    let (na, nb) = (
                        ranking.need(&learner.seen[*a], at),
                        ranking.need(&learner.seen[*b], at),
                    );
                    na.total_cmp(&nb).then(b.cmp(a))
                });
                if let Some(e) = pick {
                    learner.answer(e, at);
                    answers += 1;
                }
            }
        }
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seed: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(42);
    let learners: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(400);
    let obs = observe(learners, seed);
    let test: Vec<usize> = (0..obs.len()).filter(|i| obs[*i].day >= DAYS / 2).collect();
    let y: Vec<bool> = test.iter().map(|i| obs[*i].correct).collect();
    println!(
        "seed {seed}, {learners} learners, {ERRORS} errors each, {DAYS} days \
         ({SPEECH_ONLY_DAYS} of speech only, then {ANSWERS_PER_DAY} answers a day); \
         {} answers judged (days {}+), {:.1} % correct",
        test.len(),
        DAYS / 2,
        100.0 * y.iter().filter(|c| **c).count() as f64 / y.len() as f64
    );
    println!();
    println!(
        "| ranking | log loss | AUC | RMSE (bins) | answers per learner to halve the error rate |"
    );
    println!("|---|---|---|---|---|");
    for (r, ranking) in RANKINGS.iter().enumerate() {
        let all = probabilities(&obs, r);
        let p: Vec<f64> = test.iter().map(|i| all[*i]).collect();
        let s = score(&p, &y);
        let halve = reviews_to_halve(*ranking, learners, seed)
            .map_or("not within the run".to_owned(), |n| format!("{n:.1}"));
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {halve} |",
            ranking.name(),
            s.log_loss,
            s.auc,
            s.rmse_bins
        );
    }
}
