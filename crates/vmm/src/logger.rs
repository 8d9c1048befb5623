//! A small stderr logger for the VMM, and the clock boot times are measured on.
//!
//! The crate logs through `tracing` so that a process-wide subscriber (the CLI's `--log`,
//! later) receives VMM events too. When nobody installed one, [`init_stderr`] installs this
//! minimal subscriber: one line per event on stderr, prefixed with the time since
//! [`mark_process_start`]. It avoids pulling `tracing-subscriber` and its dependency tree
//! into the binary for the sake of a few lines of output.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{span, Event, Level, Metadata, Subscriber};

static PROCESS_START: OnceLock<(Instant, Duration)> = OnceLock::new();

fn start() -> &'static (Instant, Duration) {
    PROCESS_START.get_or_init(|| (Instant::now(), monotonic_now()))
}

/// CLOCK_MONOTONIC now: the clock `Instant` reads, as a value another process can compare.
fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Records "now" as the VMM process start; boot-timer and shutdown times are measured from
/// here. Call it first thing in `main`; later calls keep the first value.
pub fn mark_process_start() {
    start();
}

/// Time since [`mark_process_start`] (or since the first call of this function).
pub fn since_process_start() -> Duration {
    start().0.elapsed()
}

/// CLOCK_MONOTONIC at [`mark_process_start`]: with the time it spawned the VMM, a caller
/// can tell how long exec and the start of `main` took.
pub fn process_start_monotonic() -> Duration {
    start().1
}

/// Formats a duration as milliseconds with microsecond precision.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Installs the stderr logger as the global `tracing` subscriber unless one is already set.
/// `level` is one of error, warn, info, debug, trace.
pub fn init_stderr(level: &str) -> Result<(), String> {
    let max = match level {
        "error" => Level::ERROR,
        "warn" => Level::WARN,
        "info" => Level::INFO,
        "debug" => Level::DEBUG,
        "trace" => Level::TRACE,
        other => return Err(format!("unknown log level {other:?}")),
    };
    // An already installed subscriber wins: the process owner decided where logs go.
    let _ = tracing::subscriber::set_global_default(StderrLogger { max });
    Ok(())
}

struct StderrLogger {
    max: Level,
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.max))
    }
    fn new_span(&self, _span: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _span: &span::Id, _values: &span::Record<'_>) {}
    fn record_follows_from(&self, _span: &span::Id, _follows: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        let t = since_process_start();
        eprintln!(
            "[bulkhead-vmm {:>10.3} ms {:<5}] {}",
            t.as_secs_f64() * 1000.0,
            event.metadata().level(),
            v.0
        );
    }
    fn enter(&self, _span: &span::Id) {}
    fn exit(&self, _span: &span::Id) {}
}
