//! The stop deadline each container's concurrent stops share.
//!
//! A stop (StopContainer, RemoveContainer, a pod's stop or removal) joins
//! the container's deadline before it waits for the container's op lock: a
//! stop that asks for an earlier deadline lowers it, and the stop already
//! waiting out a longer grace period sees the change at once and kills.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

/// Per container id: the earliest deadline of the stops in progress, and
/// how many stops hold it.
#[derive(Default)]
pub struct StopDeadlines {
    inner: Mutex<HashMap<String, (watch::Sender<Instant>, usize)>>,
}

impl StopDeadlines {
    /// Joins container `id`'s stop deadline with `deadline`, lowering it if
    /// `deadline` is earlier. The ticket holds it until dropped.
    pub(super) fn join(self: &Arc<Self>, id: &str, deadline: Instant) -> StopTicket {
        let mut inner = self.inner.lock().expect("stop deadlines lock");
        let rx = match inner.get_mut(id) {
            Some((tx, holders)) => {
                *holders += 1;
                tx.send_if_modified(|d| {
                    let earlier = deadline < *d;
                    if earlier {
                        *d = deadline;
                    }
                    earlier
                });
                tx.subscribe()
            }
            None => {
                let (tx, rx) = watch::channel(deadline);
                inner.insert(id.to_string(), (tx, 1));
                rx
            }
        };
        StopTicket {
            stops: self.clone(),
            id: id.to_string(),
            deadline: rx,
        }
    }
}

/// One stop's hold on its container's shared deadline.
pub(super) struct StopTicket {
    stops: Arc<StopDeadlines>,
    id: String,
    /// The earliest deadline any stop in progress asked for.
    pub deadline: watch::Receiver<Instant>,
}

impl Drop for StopTicket {
    fn drop(&mut self) {
        let mut inner = self.stops.inner.lock().expect("stop deadlines lock");
        if let Some((_, holders)) = inner.get_mut(&self.id) {
            *holders -= 1;
            if *holders == 0 {
                inner.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_earlier_deadline_lowers_the_shared_one_a_later_does_not() {
        let stops = Arc::new(StopDeadlines::default());
        let now = Instant::now();
        let mut first = stops.join("c", now + Duration::from_secs(120));
        let later = stops.join("c", now + Duration::from_secs(300));
        assert_eq!(*first.deadline.borrow(), now + Duration::from_secs(120));
        assert!(!first.deadline.has_changed().unwrap());
        let earlier = stops.join("c", now);
        assert!(first.deadline.has_changed().unwrap());
        assert_eq!(*first.deadline.borrow_and_update(), now);
        drop((later, earlier, first));
        assert!(
            stops.inner.lock().unwrap().is_empty(),
            "the last ticket frees it"
        );
        let fresh = stops.join("c", now + Duration::from_secs(5));
        assert_eq!(*fresh.deadline.borrow(), now + Duration::from_secs(5));
    }
}
