//! The shutdown signal every long-running task watches.

#![cfg(feature = "worker")]

use tokio::sync::watch;

/// Resolves once shutdown has been requested (or the sender is gone).
pub async fn requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
