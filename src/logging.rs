//! Log output: journald with structured fields under systemd, human-readable
//! stderr otherwise.
//!
//! Everything goes through the `log` facade; crates that emit `tracing` events
//! (hyper, bollard) reach it through tracing's `log` feature, so one logger sees
//! every crate. The level can change at run time (SIGHUP) through
//! `log::set_max_level`.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// Installs the logger once per process. Under systemd (stderr connected to
/// the journal) records go to journald with their key-values as fields; when
/// the journal socket is missing (tests, containers, qemu) they fall back to
/// stderr rather than failing.
pub fn init(level: LevelFilter) {
    let installed = if systemd_journal_logger::connected_to_journal() {
        systemd_journal_logger::JournalLog::new()
            .map(|j| {
                j.with_syslog_identifier("commonscloud".into())
                    .with_extra_fields([("COMMONSCLOUD_VERSION", env!("CARGO_PKG_VERSION"))])
                    .install()
                    .is_ok()
            })
            .unwrap_or(false)
    } else {
        false
    };
    if !installed {
        let _ = log::set_boxed_logger(Box::new(Stderr));
    }
    log::set_max_level(level);
}

/// `2026-11-25T19:40:01Z INFO  commonscloud::daemon: started task=api`
struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        // Continuation lines are indented so every record starts a line.
        let message = record.args().to_string().replace('\n', "\n    ");
        let mut line = format!(
            "{stamp} {:<5} {}: {message}",
            record.level(),
            record.target()
        );
        struct Kv<'a>(&'a mut String);
        impl<'kvs> log::kv::VisitSource<'kvs> for Kv<'_> {
            fn visit_pair(
                &mut self,
                key: log::kv::Key<'kvs>,
                value: log::kv::Value<'kvs>,
            ) -> Result<(), log::kv::Error> {
                self.0.push_str(&format!(" {key}={value}"));
                Ok(())
            }
        }
        let _ = record.key_values().visit(&mut Kv(&mut line));
        line.push('\n');
        // One write per record, so lines from several threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}
