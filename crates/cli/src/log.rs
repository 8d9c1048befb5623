//! `--log FILE --log-format text|json`: log lines in the shape runc writes,
//! because engines parse them (containerd reads the last `"level":"error"`
//! line of log.json to report why the runtime failed).
//!
//! A person at a terminal gets plain sentences instead (`bulkhead: warning:
//! ...`): when stderr is a terminal and neither `--log` nor `--log-format`
//! was given. Engines always pass one of them (and never a terminal as
//! stderr), so what they parse does not change.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Format {
    /// runc's logfmt lines: `time="..." level=warning msg="..."`.
    Text,
    Json,
    /// `bulkhead: warning: ...`, for a person (never chosen on the command line).
    #[value(skip)]
    Human,
}

impl Format {
    /// `--log-format` if given; else human lines when stderr is a terminal
    /// and there is no `--log`; else runc's text lines.
    pub fn choose(log: Option<&Path>, given: Option<Format>, stderr_is_tty: bool) -> Format {
        match given {
            Some(f) => f,
            None if log.is_none() && stderr_is_tty => Format::Human,
            None => Format::Text,
        }
    }
}

pub struct Logger {
    out: Mutex<Box<dyn Write + Send>>,
    format: Format,
    max: Level,
}

/// The `--log` file's descriptor, for a child that closes every descriptor it does not know
/// (the jailed VMM) and must keep this one.
static LOG_FD: std::sync::OnceLock<std::os::fd::RawFd> = std::sync::OnceLock::new();

pub fn log_fd() -> Option<std::os::fd::RawFd> {
    LOG_FD.get().copied()
}

impl Logger {
    pub fn install(path: Option<&Path>, format: Format, debug: bool) -> std::io::Result<()> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => {
                let f = File::options().create(true).append(true).open(p)?;
                let _ = LOG_FD.set(std::os::fd::AsRawFd::as_raw_fd(&f));
                Box::new(f)
            }
            None => Box::new(std::io::stderr()),
        };
        let logger = Logger {
            out: Mutex::new(out),
            format,
            max: if debug { Level::DEBUG } else { Level::WARN },
        };
        let _ = tracing::subscriber::set_global_default(logger);
        Ok(())
    }

    fn line(&self, level: &Level, msg: &str) -> String {
        let time = container::state::rfc3339(SystemTime::now());
        // logrus spelling, which engines expect.
        let lvl = match *level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        match self.format {
            Format::Json => {
                let v = serde_json::json!({"level": lvl, "msg": msg, "time": time});
                format!("{v}\n")
            }
            Format::Text => format!("time=\"{time}\" level={lvl} msg={msg:?}\n"),
            Format::Human => format!("bulkhead: {lvl}: {msg}\n"),
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl Subscriber for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() <= self.max
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut m = Message(String::new());
        e.record(&mut m);
        let line = self.line(e.metadata().level(), &m.0);
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_shaped_lines() {
        let l = Logger {
            out: Mutex::new(Box::new(std::io::sink())),
            format: Format::Json,
            max: Level::WARN,
        };
        let v: serde_json::Value =
            serde_json::from_str(&l.line(&Level::ERROR, "boom \"x\"")).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "boom \"x\"");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let t = Logger {
            format: Format::Text,
            ..l
        };
        assert!(t
            .line(&Level::WARN, "w")
            .contains("level=warning msg=\"w\""));
        let h = Logger {
            format: Format::Human,
            ..t
        };
        assert_eq!(
            h.line(&Level::WARN, "sandbox: \"x\" is odd"),
            "bulkhead: warning: sandbox: \"x\" is odd\n"
        );
    }

    #[test]
    fn format_choice() {
        let log = Some(Path::new("/x/log.json"));
        // What an engine passes is kept, terminal or not.
        assert_eq!(Format::choose(log, Some(Format::Json), true), Format::Json);
        assert_eq!(Format::choose(None, Some(Format::Text), true), Format::Text);
        assert_eq!(Format::choose(log, None, true), Format::Text);
        // Without either flag: human lines only for a terminal's stderr.
        assert_eq!(Format::choose(None, None, true), Format::Human);
        assert_eq!(Format::choose(None, None, false), Format::Text);
    }
}
