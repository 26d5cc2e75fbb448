//! kp's `tracing` events sent to Python's `logging` (logger `kp`), so `logging.basicConfig(
//! level=logging.INFO)` shows a training run's progress as `kp train` prints it.
//!
//! Events at INFO and above from kp's crates are formatted (message, then `field=value`) and
//! handed to `logging.getLogger("kp").log(level, text)`, taking the GIL for that call only: the
//! training loop runs with the GIL released, and its events arrive from any thread.

use std::fmt::Write;
use std::sync::Once;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The message and fields of one event as text.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
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

/// The layer forwarding events to Python.
struct PythonLogging;

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || !meta.target().starts_with("kp") {
            return;
        }
        let level = match *meta.level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            _ => 20,
        };
        let mut text = Text::default();
        event.record(&mut text);
        Python::attach(|py| {
            let logged = py
                .import("logging")
                .and_then(|l| l.call_method1("getLogger", ("kp",)))
                .and_then(|log| log.call_method1("log", (level, text.0.trim_start())));
            // A failing handler must not stop kp; Python prints nothing for it either.
            drop(logged);
        });
    }
}

/// Installs the bridge as the process's tracing subscriber (once; a subscriber set earlier
/// by the embedding program stays).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(PythonLogging);
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}
