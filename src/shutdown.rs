//! Stopping on a signal, the same way for every long-running command: the first SIGTERM or
//! SIGINT asks the work to finish what it has open (the blocking loops poll the flag); a
//! second signal, or a grace period running out, exits at once with status 1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

/// How long a stop may take once asked for, by default.
pub const GRACE: Duration = Duration::from_secs(30);

/// The flag a first signal sets.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// The flag, for loops that poll it.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Listens for SIGTERM and SIGINT on the current runtime. On the first, logs
    /// `shutting down: <finishing>` and sets the flag; a second signal, or `grace` passing
    /// without the process having exited, ends it at once.
    pub fn listen(&self, finishing: &'static str, grace: Duration) -> std::io::Result<()> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let flag = self.flag.clone();
        tokio::spawn(async move {
            let which = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!(signal = which, "shutting down: {finishing}");
            flag.store(true, Ordering::Relaxed);
            let again = tokio::select! {
                _ = terminate.recv() => "a second signal (SIGTERM)".to_owned(),
                _ = interrupt.recv() => "a second signal (SIGINT)".to_owned(),
                _ = tokio::time::sleep(grace) => format!("no clean stop within {} s", grace.as_secs()),
            };
            tracing::error!(reason = %again, "exiting now, without finishing");
            std::process::exit(1);
        });
        Ok(())
    }
}
