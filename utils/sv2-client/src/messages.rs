use stratum_apps::stratum_core::parsers_sv2::AnyMessageOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::PoolReader;
use crate::error::ClientError;

/// The pool's messages, read by a task of their own: a frame half read when a `select!` picks
/// another branch would be lost, so reading never races anything. The task stops after the
/// first error, or when this is dropped.
pub struct Messages {
    messages: mpsc::Receiver<Result<AnyMessageOwned, ClientError>>,
    reader: JoinHandle<()>,
}

impl PoolReader {
    /// Reads on a task of its own, with up to `capacity` messages waiting to be taken.
    pub fn spawn(mut self, capacity: usize) -> Messages {
        let (sender, messages) = mpsc::channel(capacity);
        let reader = tokio::spawn(async move {
            loop {
                let message = self.recv().await;
                let failed = message.is_err();
                if sender.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Messages { messages, reader }
    }
}

impl Messages {
    /// The next message; cancellation safe. After an error there are no more.
    pub async fn recv(&mut self) -> Result<AnyMessageOwned, ClientError> {
        self.messages
            .recv()
            .await
            .unwrap_or(Err(ClientError::Closed))
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
