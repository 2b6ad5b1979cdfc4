//! Running state-changing work so that it outlives the request that asked
//! for it.

use anyhow::Context;

use crate::error::CriError;

/// Runs a state-changing call in its own task, so that it finishes (and
/// rolls back) even when the caller's request is dropped at its deadline:
/// the call's own result. Errors: the call's, or Internal if the task
/// panicked.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, CriError>> + Send + 'static,
) -> Result<T, CriError> {
    tokio::spawn(work).await.context("lifecycle task")?
}
