//! Container events (GetContainerEvents, the Evented PLEG of KEP-3386):
//! CREATED, STARTED, STOPPED and DELETED of containers and of pods, fanned
//! out to every subscriber in the order they were emitted.
//!
//! The concerns emit an event right after the transition is recorded,
//! while they hold the object's op lock (so one object's events keep their
//! order). An event carries what containerd's `generateAndSendContainerEvent`
//! (internal/cri/server/helpers.go) fills: the id (a pod's own for a pod's
//! event), the type, `created_at` in unix nanoseconds, the pod's status and
//! the statuses of the pod's containers at the time of the event.
//!
//! Fan-out is one `tokio::sync::broadcast` ring of [`CAPACITY`] events:
//! emitting never waits on a subscriber (the ring overwrites the oldest
//! event), each subscriber reads at its own pace, and one that falls more
//! than the ring behind loses its place: its stream ends with
//! RESOURCE_EXHAUSTED (kubelet then subscribes again and relists) while the
//! others go on. A subscriber that goes away drops its receiver, which
//! leaves the ring at once. The ring's memory is bounded and shared, where
//! a queue per subscriber would copy every event once per subscriber.

use std::sync::Arc;

use crius_proto::cri;
use tokio::sync::broadcast;
use tokio_stream::Stream;

use crate::error::CriError;
use crate::image::{ImageRecord, ImageStore};
use crate::stamp::now_nanos;
use crate::state::container::{ContainerRecord, ImageNames};
use crate::state::sandbox::PodRecord;
use crate::state::table::Table;

/// How many events a subscriber may fall behind before it is dropped
/// (containerd and CRI-O buffer 1000; broadcast rings are a power of two).
pub const CAPACITY: usize = 1024;

/// The kind of an event, CRI's `ContainerEventType`.
pub use cri::ContainerEventType as EventType;

/// The events' hub: emitted by the container and pod life cycles, read by
/// GetContainerEvents. Cheap to share (`Arc`).
pub struct Events {
    pods: Arc<Table<PodRecord>>,
    containers: Arc<Table<ContainerRecord>>,
    /// Names the containers' images as ContainerStatus does; without it
    /// (tests), each image is named by its ID.
    images: Option<Arc<ImageStore>>,
    sender: broadcast::Sender<cri::ContainerEventResponse>,
}

/// Why a subscriber's stream ended.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The subscriber read too slowly: `missed` events were overwritten
    /// before it read them.
    #[error("GetContainerEvents: this subscriber fell {missed} events behind (more than the {CAPACITY} buffered) and was dropped; subscribe again and relist")]
    Lagged { missed: u64 },
}

/// A dropped subscriber is RESOURCE_EXHAUSTED: its buffer ran over.
impl From<EventsError> for CriError {
    fn from(e: EventsError) -> CriError {
        CriError::ResourceExhausted(e.to_string())
    }
}

/// One subscriber's events, in order; ends with an error if it falls behind.
pub type EventStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, EventsError>> + Send>>;

impl Events {
    /// A hub reading the pods' and containers' statuses from these tables.
    pub fn new(pods: Arc<Table<PodRecord>>, containers: Arc<Table<ContainerRecord>>) -> Events {
        Events {
            pods,
            containers,
            images: None,
            sender: broadcast::Sender::new(CAPACITY),
        }
    }

    /// The same hub naming the containers' images from `images`, as
    /// ContainerStatus does (their tags and repo digests as they are now).
    pub fn with_images(mut self, images: Arc<ImageStore>) -> Events {
        self.images = Some(images);
        self
    }

    /// A new subscriber: every event emitted from now on, in order. Its
    /// stream ends with [`EventsError::Lagged`] if it falls more than
    /// [`CAPACITY`] events behind; dropping it unsubscribes.
    pub fn subscribe(&self) -> EventStream {
        let receiver = self.sender.subscribe();
        tracing::info!(
            subscribers = self.subscribers(),
            "container events subscribed"
        );
        Box::pin(futures_util::stream::unfold(
            Some(receiver),
            |receiver| async move {
                let mut receiver = receiver?;
                match receiver.recv().await {
                    Ok(event) => Some((Ok(event), Some(receiver))),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a slow container events subscriber is dropped");
                        // The receiver is dropped here: it leaves the ring.
                        Some((Err(EventsError::Lagged { missed }), None))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        ))
    }

    /// How many subscribers there are now.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Emits `kind` for `container`, with its pod's status (from the pods'
    /// table) and the statuses of the pod's containers as they are now.
    pub fn container(&self, kind: EventType, container: &ContainerRecord) {
        if self.subscribers() == 0 {
            return;
        }
        let pod = self.pods.find(&container.pod_id).ok().map(|e| e.snapshot());
        self.send(kind, &container.id, &container.pod_id, pod);
    }

    /// Emits `kind` for the pod `pod` (its id as the event's
    /// `container_id`, as containerd), with `pod`'s status (the record as the
    /// caller last saw it: a removed pod's is its last) and its containers'.
    pub fn pod(&self, kind: EventType, pod: &PodRecord) {
        if self.subscribers() == 0 {
            return;
        }
        self.send(kind, &pod.id, &pod.id, Some(pod.clone()));
    }

    /// `container`'s status, as ContainerStatus reports it.
    fn status(&self, container: &ContainerRecord) -> cri::ContainerStatus {
        let image = (self.images.as_ref()).and_then(|images| images.resolve(&container.image_id));
        container.status(
            image
                .as_ref()
                .map_or_else(ImageNames::default, ImageRecord::names),
        )
    }

    fn send(&self, kind: EventType, id: &str, pod_id: &str, pod: Option<PodRecord>) {
        let mut containers = self.containers.select(|c| c.pod_id == pod_id);
        containers.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let event = cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status: pod.map(|p| p.status()),
            containers_statuses: containers.iter().map(|c| self.status(c)).collect(),
        };
        tracing::debug!(id, event = kind.as_str_name(), "container event");
        // An error means no subscriber is left: nobody to tell.
        let _ = self.sender.send(event);
    }
}

/// Reading a subscriber's events in the concerns' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::{EventStream, EventType};
    use crius_proto::cri;

    /// The next event; panics after 5 s without one, or if the stream ended.
    pub async fn next_event(stream: &mut EventStream) -> cri::ContainerEventResponse {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .expect("not dropped")
    }

    /// The next event's type and id.
    pub async fn next(stream: &mut EventStream) -> (EventType, String) {
        let event = next_event(stream).await;
        (event.container_event_type(), event.container_id)
    }

    /// Panics if an event arrives within 100 ms.
    pub async fn assert_no_more(stream: &mut EventStream) {
        let more = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        assert!(more.is_err(), "an unexpected event: {more:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::next;
    use super::*;
    use crate::state::container::{fixture, ContainerState};
    use crate::state::table::Record;
    use crate::state::Store;
    use tokio_stream::StreamExt;

    struct Hub {
        events: Events,
        pods: Arc<Table<PodRecord>>,
        containers: Arc<Table<ContainerRecord>>,
        _tmp: tempfile::TempDir,
    }

    /// A hub over real tables in a temp dir holding pod "p1" and its
    /// container "c1" (running).
    fn hub() -> Hub {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let pods = Arc::new(Table::<PodRecord>::load(store.clone()).unwrap());
        let containers = Arc::new(Table::<ContainerRecord>::load(store).unwrap());
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let pod = PodRecord::new("p1".into(), tmp.path().join("p1"), config, 1);
        pods.reserve_name(&pod.name(), "p1").unwrap();
        pods.insert(pod).unwrap();
        let container = fixture(ContainerState::Running, 0);
        containers.reserve_name(&container.name(), "c1").unwrap();
        containers.insert(container).unwrap();
        Hub {
            events: Events::new(pods.clone(), containers.clone()),
            pods,
            containers,
            _tmp: tmp,
        }
    }

    impl Hub {
        fn container(&self) -> ContainerRecord {
            self.containers.find("c1").unwrap().snapshot()
        }
        fn pod(&self) -> PodRecord {
            self.pods.find("p1").unwrap().snapshot()
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_with_the_pods_and_its_containers_statuses() {
        let h = hub();
        let mut stream = h.events.subscribe();
        h.events.pod(EventType::ContainerCreatedEvent, &h.pod());
        h.events
            .container(EventType::ContainerStartedEvent, &h.container());
        h.events
            .container(EventType::ContainerStoppedEvent, &h.container());
        let before = now_nanos();
        h.events.pod(EventType::ContainerDeletedEvent, &h.pod());

        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next(&mut stream).await);
        }
        assert_eq!(
            seen,
            [
                (EventType::ContainerCreatedEvent, "p1".to_string()),
                (EventType::ContainerStartedEvent, "c1".to_string()),
                (EventType::ContainerStoppedEvent, "c1".to_string()),
            ]
        );
        let last = stream.next().await.unwrap().unwrap();
        assert_eq!(
            last.container_event_type(),
            EventType::ContainerDeletedEvent
        );
        assert_eq!(last.container_id, "p1");
        assert!(last.created_at >= before, "unix nanoseconds");
        let pod = last.pod_sandbox_status.unwrap();
        assert_eq!(
            (pod.id.as_str(), pod.metadata.unwrap().uid.as_str()),
            ("p1", "u1")
        );
        assert_eq!(last.containers_statuses.len(), 1);
        let c1 = &last.containers_statuses[0];
        assert_eq!(c1.id, "c1");
        assert_eq!(c1.state(), cri::ContainerState::ContainerRunning);
    }

    /// A container's event reads its pod's status from the table; once the
    /// container is removed, its pod's other containers are reported.
    #[tokio::test]
    async fn a_deleted_containers_event_has_its_pod_without_it() {
        let h = hub();
        let mut stream = h.events.subscribe();
        let c1 = h.container();
        h.containers.remove("c1").unwrap();
        h.events.container(EventType::ContainerDeletedEvent, &c1);
        let event = stream.next().await.unwrap().unwrap();
        assert_eq!(event.container_id, "c1");
        assert_eq!(event.pod_sandbox_status.unwrap().id, "p1");
        assert!(event.containers_statuses.is_empty());
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event() {
        let h = hub();
        let mut first = h.events.subscribe();
        let mut second = h.events.subscribe();
        assert_eq!(h.events.subscribers(), 2);
        for kind in [
            EventType::ContainerCreatedEvent,
            EventType::ContainerStartedEvent,
        ] {
            h.events.container(kind, &h.container());
        }
        for stream in [&mut first, &mut second] {
            assert_eq!(next(stream).await.0, EventType::ContainerCreatedEvent);
            assert_eq!(next(stream).await.0, EventType::ContainerStartedEvent);
        }
    }

    /// A subscriber that reads nothing is dropped with an error once it is
    /// more than the buffer behind; one that keeps up gets every event, and
    /// the emitter never waited.
    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_and_the_others_go_on() {
        let h = hub();
        let mut slow = h.events.subscribe();
        let mut quick = h.events.subscribe();
        let c1 = h.container();
        for _ in 0..=CAPACITY {
            h.events.container(EventType::ContainerStartedEvent, &c1);
            assert_eq!(next(&mut quick).await.1, "c1");
        }
        let err = slow.next().await.expect("an error").unwrap_err();
        assert!(matches!(err, EventsError::Lagged { missed: 1 }), "{err:?}");
        let status = tonic::Status::from(CriError::from(err));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("subscribe again"), "{status:?}");
        assert!(slow.next().await.is_none(), "the stream ended");
        assert_eq!(h.events.subscribers(), 1, "the slow one left");
        h.events.container(EventType::ContainerStoppedEvent, &c1);
        assert_eq!(next(&mut quick).await.0, EventType::ContainerStoppedEvent);
    }

    #[tokio::test]
    async fn a_subscriber_that_goes_away_is_removed() {
        let h = hub();
        let stream = h.events.subscribe();
        let kept = h.events.subscribe();
        assert_eq!(h.events.subscribers(), 2);
        drop(stream);
        assert_eq!(h.events.subscribers(), 1);
        drop(kept);
        assert_eq!(h.events.subscribers(), 0);
        // Emitting without subscribers is a no-op.
        h.events
            .container(EventType::ContainerStartedEvent, &h.container());
        let mut late = h.events.subscribe();
        h.events.pod(EventType::ContainerStoppedEvent, &h.pod());
        assert_eq!(
            next(&mut late).await,
            (EventType::ContainerStoppedEvent, "p1".to_string())
        );
    }
}
