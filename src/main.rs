//! The `errata` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use errata::config::{Config, StoreKind};
use errata::startup::{shutdown_signal, Application};
use errata::store::Background;
use errata::{store, telemetry};

// Requests allocate many short-lived buffers on one thread and free them on
// another (rows decoded on the blocking pool, answers encoded on the
// runtime); mimalloc handles that pattern far better than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "errata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Create the keyspace and tables (cql mode).
    Migrate,
    /// Recompute frequencies from the event log and correct the counts.
    Repair {
        /// Repair only this learner (repeat for several).
        #[arg(long = "user")]
        users: Vec<Uuid>,
        /// Also write what the repair found (corrections, success, when) to
        /// this file in the Prometheus text format, for a textfile collector
        /// to export; replaced atomically.
        #[arg(long, env = "ERRATA_REPAIR_METRICS_FILE")]
        metrics_file: Option<std::path::PathBuf>,
    },
    /// Make every buffered write durable now (cql mode).
    Flush,
    /// Write many learners straight into a fresh embedded data directory,
    /// or a freshly migrated keyspace in cql mode (for load tests); prints
    /// each one's ids: user, conversation, then utterances, on one line.
    Seed {
        /// How many learners.
        #[arg(long)]
        learners: usize,
        /// Utterances per learner, in one conversation.
        #[arg(long, default_value_t = 4)]
        utterances: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(match cli.command {
        Some(Command::Seed { .. }) => telemetry::LogTo::Stderr,
        _ => telemetry::LogTo::Stdout,
    });
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(&config).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate => {
            let store = store::migrate(&config).await.context("migrating")?;
            println!("{store}");
            Ok(())
        }
        Command::Repair {
            users,
            metrics_file,
        } => {
            // No flusher: one cut off at exit would leave its batch to be
            // applied again.
            let store = store::open_for(&config, Background::Command).await?;
            let targets: Vec<Option<Uuid>> = if users.is_empty() {
                vec![None]
            } else {
                users.into_iter().map(Some).collect()
            };
            let mut repaired = Ok(0);
            let mut rewritten = Ok(0);
            for target in targets.iter().copied() {
                match (store.repair_memory(target).await, &mut rewritten) {
                    (Ok(n), Ok(total)) => *total += n,
                    (Err(e), _) => rewritten = Err(e),
                    (Ok(_), Err(_)) => {}
                }
            }
            for target in targets {
                // One learner that cannot be repaired now stops no other.
                match (store.repair(target).await, &mut repaired) {
                    (Ok(n), Ok(total)) => *total += n,
                    (Err(e), _) => repaired = Err(e),
                    (Ok(_), Err(_)) => {}
                }
            }
            let closed = store.close().await;
            if let Some(path) = metrics_file {
                let corrected = match (&repaired, &closed) {
                    (Ok(n), Ok(())) => Some(*n as u64),
                    _ => None,
                };
                write_repair_metrics(&path, corrected)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            closed?;
            let corrected = repaired?;
            println!("repair done: {corrected} counts corrected");
            println!(
                "memory states rewritten from the review log: {}",
                rewritten?
            );
            Ok(())
        }
        Command::Flush => {
            let store = store::open_for(&config, Background::Command).await?;
            let flushed = store.flush().await;
            store.shutdown().await?;
            let flushed = flushed?;
            println!("flush done: {flushed} learners flushed");
            Ok(())
        }
        Command::Seed {
            learners,
            utterances,
        } => {
            anyhow::ensure!(utterances >= 1, "--utterances must be at least 1");
            // Not the stdout lock: the cql seed awaits tasks on other
            // threads, which must not block on it.
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            match config.store {
                StoreKind::Embedded => {
                    store::sqlite::seed::seed(&config.data_dir, learners, utterances, &mut out)
                }
                StoreKind::Cql => {
                    store::cql::seed::seed(&config, learners, utterances, &mut out).await
                }
            }
            .context("seeding")?;
            Ok(())
        }
    }
}

/// The repair's metrics, written beside `path` and renamed over it, so a
/// collector never reads half a file.
fn write_repair_metrics(path: &std::path::Path, corrected: Option<u64>) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".{}.partial", std::process::id()));
    std::fs::write(&partial, telemetry::repair_textfile(corrected, now))?;
    std::fs::rename(&partial, path)?;
    Ok(())
}
