//! Creating the learners: each gets a user, a conversation and utterances,
//! either through the HTTP API or (for large populations) by the server's
//! own `errata seed`, before it serves.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Learner {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    /// What the learner said in the conversation; each error report is about
    /// one of these.
    pub utterance_ids: Vec<Uuid>,
}

pub const SENTENCES: &[&str] = &[
    "She go to work by bus every day.",
    "I am agree with you about this.",
    "Yesterday I have seen a very good film.",
    "He don't like the informations you sent.",
    "We was discussing about the problem in the meeting.",
    "If I would have time, I will come.",
    "Can you explain me how does it work?",
    "I live here since three years.",
];

/// Creates `count` learners, each with `utterances` utterances in one
/// conversation, through the API with `concurrency` requests in flight,
/// printing progress to stderr.
pub async fn via_api(
    base: &str,
    count: usize,
    utterances: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Learner>> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let run = format!("{:08x}", rand::random::<u32>());
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = done.load(Ordering::Relaxed);
                let rate = d as f64 / started.elapsed().as_secs_f64();
                eprint!(
                    "\r  setup: {d}/{count} learners ({rate:.0}/s, {} requests each)   ",
                    2 + utterances
                );
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, done, base, run) = (
            client.clone(),
            next.clone(),
            done.clone(),
            base.to_owned(),
            run.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(made);
                }
                made.push((i, create_one(&client, &base, &run, i, utterances).await?));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut learners = vec![None; count];
    for worker in workers {
        for (i, learner) in worker.await?? {
            learners[i] = Some(learner);
        }
    }
    progress.abort();
    eprintln!(
        "\r  setup: {count} learners through the API in {:.1} s                    ",
        started.elapsed().as_secs_f64()
    );
    Ok(learners
        .into_iter()
        .map(|l| l.expect("every learner"))
        .collect())
}

/// POSTs the body `attempt` makes, retrying (up to 5 attempts, backing off)
/// when the server says it is unavailable for now (502/503/504) or the
/// connection fails: setup should not die of one overloaded moment. A
/// retried creation may leave an extra row behind, which load does not mind;
/// `attempt` lets the caller vary what must stay unique (an e-mail).
async fn post(
    client: &reqwest::Client,
    url: String,
    body: impl Fn(u32) -> Value,
) -> anyhow::Result<Value> {
    const ATTEMPTS: u32 = 5;
    for attempt in 1..=ATTEMPTS {
        let last = attempt == ATTEMPTS;
        let retry_in = Duration::from_millis(100 << attempt);
        let response = match client.post(&url).json(&body(attempt)).send().await {
            Ok(response) => response,
            Err(e) if !last => {
                eprintln!("\n  setup: POST {url}: {e}; retrying");
                tokio::time::sleep(retry_in).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let text = response.text().await.unwrap_or_default();
        let transient = matches!(status.as_u16(), 502..=504);
        if !transient || last {
            bail!("POST {url}: {status}: {text}");
        }
        eprintln!("\n  setup: POST {url}: {status}: {text}; retrying");
        tokio::time::sleep(retry_in).await;
    }
    unreachable!("the last attempt returns")
}

fn id(value: &Value, field: &str) -> anyhow::Result<Uuid> {
    value[field]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .with_context(|| format!("no {field} in {value}"))
}

async fn create_one(
    client: &reqwest::Client,
    base: &str,
    run: &str,
    i: usize,
    utterances: usize,
) -> anyhow::Result<Learner> {
    let user = post(
        client,
        format!("{base}/users/"),
        |attempt| json!({"username": format!("learner{i}"), "email": format!("learner{i}.{attempt}.{run}@load.test")}),
    )
    .await?;
    let user_id = id(&user, "user_id")?;
    let conversation = post(
        client,
        format!("{base}/conversations/"),
        |_| json!({"user_id": user_id}),
    )
    .await?;
    let conversation_id = id(&conversation, "conversation_id")?;
    let mut utterance_ids = Vec::with_capacity(utterances);
    for u in 0..utterances {
        let utterance = post(client, format!("{base}/utterances/"), |_| {
            json!({"user_id": user_id, "conversation_id": conversation_id,
                       "content": SENTENCES[(i + u) % SENTENCES.len()]})
        })
        .await?;
        utterance_ids.push(id(&utterance, "utterance_id")?);
    }
    Ok(Learner {
        user_id,
        conversation_id,
        utterance_ids,
    })
}

/// Has `binary` (`errata seed`, configured by `env`: a fresh data
/// directory or keyspace) write `count` learners before it serves; reads
/// back their ids (one learner a line: user, conversation, then the
/// utterances, separated by spaces).
pub fn bulk(
    binary: &Path,
    env: &[(String, String)],
    count: usize,
    utterances: usize,
) -> anyhow::Result<Vec<Learner>> {
    let started = Instant::now();
    let output = std::process::Command::new(binary)
        .arg("seed")
        .arg("--learners")
        .arg(count.to_string())
        .arg("--utterances")
        .arg(utterances.to_string())
        .envs(env.iter().cloned())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} seed", binary.display()))?;
    if !output.status.success() {
        bail!("{} seed failed: {}", binary.display(), output.status);
    }
    let text = String::from_utf8(output.stdout).context("seed output is not UTF-8")?;
    let learners = text
        .lines()
        .map(|line| {
            let ids = line
                .split(' ')
                .map(Uuid::parse_str)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("a seed line: {line:?}"))?;
            match ids.as_slice() {
                [user_id, conversation_id, said @ ..] if !said.is_empty() => Ok(Learner {
                    user_id: *user_id,
                    conversation_id: *conversation_id,
                    utterance_ids: said.to_vec(),
                }),
                _ => bail!("a seed line without utterances: {line:?}"),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if learners.len() != count {
        bail!("seed wrote {} learners, not {count}", learners.len());
    }
    eprintln!(
        "  bulk setup: {count} learners seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(learners)
}
