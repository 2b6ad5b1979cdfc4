//! An in-memory table of records of one kind (pods, containers), backed by the
//! store, with the name reservations CRI requires and a per-record operation
//! lock so that lifecycle calls on one object do not interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Store, StoreError};
use crate::error::CriError;

pub trait Record: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// The store's kind directory.
    const KIND: &'static str;
    /// How errors name a record of this kind ("pod sandbox", "container").
    const NOUN: &'static str;
    fn id(&self) -> &str;
    /// The unique name CRI reserves for the record.
    fn name(&self) -> String;
}

pub struct Entry<R> {
    record: Mutex<R>,
    /// Held across a whole lifecycle call (start, stop, remove) on this record.
    pub op: tokio::sync::Mutex<()>,
}

impl<R: Clone> Entry<R> {
    pub fn snapshot(&self) -> R {
        self.record.lock().expect("record lock").clone()
    }
}

struct Inner<R> {
    entries: HashMap<String, Arc<Entry<R>>>,
    /// name → id; a name is reserved before its record exists.
    names: HashMap<String, String>,
}

pub struct Table<R> {
    store: Store,
    inner: Mutex<Inner<R>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{noun} {id:?} not found")]
    NotFound { noun: &'static str, id: String },
    #[error("{noun} name {name:?} is reserved for {holder}")]
    NameTaken {
        noun: &'static str,
        name: String,
        holder: String,
    },
    #[error("{noun} id prefix {prefix:?} is ambiguous")]
    Ambiguous { noun: &'static str, prefix: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The one mapping of table errors to CRI codes: an unknown id is NotFound
/// (as CRI expects), and so is an ambiguous id prefix (kubelet always sends
/// full ids; crictl users see which prefix was too short); a taken name is
/// AlreadyExists; a store fault is Internal.
impl From<TableError> for CriError {
    fn from(e: TableError) -> CriError {
        match e {
            TableError::NotFound { .. } | TableError::Ambiguous { .. } => {
                CriError::NotFound(e.to_string())
            }
            TableError::NameTaken { .. } => CriError::AlreadyExists(e.to_string()),
            TableError::Store(_) => CriError::Internal(e.into()),
        }
    }
}

impl<R: Record> Table<R> {
    /// Loads every record of the kind and re-reserves their names.
    /// Errors: the store's (a corrupt record is set aside, not an error).
    pub fn load(store: Store) -> Result<Table<R>, StoreError> {
        Table::load_upgrading(store, |_| {})
    }

    /// As [`Table::load`], passing each record through `upgrade` first: it
    /// fills what a record written by an older criusd lacks. Nothing is
    /// written; an upgraded record is persisted with its next update.
    pub fn load_upgrading(
        store: Store,
        mut upgrade: impl FnMut(&mut R),
    ) -> Result<Table<R>, StoreError> {
        let mut inner = Inner {
            entries: HashMap::new(),
            names: HashMap::new(),
        };
        for (id, mut record) in store.load_all::<R>(R::KIND)? {
            upgrade(&mut record);
            inner.names.insert(record.name(), id.clone());
            inner.entries.insert(
                id,
                Arc::new(Entry {
                    record: Mutex::new(record),
                    op: tokio::sync::Mutex::new(()),
                }),
            );
        }
        Ok(Table {
            store,
            inner: Mutex::new(inner),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner<R>> {
        self.inner.lock().expect("table lock")
    }

    /// Reserves `name` for `id`. Errors: `NameTaken` (AlreadyExists) when
    /// another id holds it, even the same id (not idempotent).
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), TableError> {
        let mut inner = self.inner();
        if let Some(holder) = inner.names.get(name) {
            return Err(TableError::NameTaken {
                noun: R::NOUN,
                name: name.to_string(),
                holder: holder.clone(),
            });
        }
        inner.names.insert(name.to_string(), id.to_string());
        Ok(())
    }

    /// Releases a name if `id` holds it.
    pub fn release_name(&self, name: &str, id: &str) {
        let mut inner = self.inner();
        if inner.names.get(name).is_some_and(|h| h == id) {
            inner.names.remove(name);
        }
    }

    /// Persists a new record and indexes it; its name must be reserved already.
    pub fn insert(&self, record: R) -> Result<Arc<Entry<R>>, TableError> {
        self.store.put(R::KIND, record.id(), &record)?;
        let id = record.id().to_string();
        let entry = Arc::new(Entry {
            record: Mutex::new(record),
            op: tokio::sync::Mutex::new(()),
        });
        self.inner().entries.insert(id, entry.clone());
        Ok(entry)
    }

    /// The one lookup of a record, by full id or unique id prefix: its
    /// entry. Errors: `NotFound` naming the id when nothing matches (an empty
    /// id matches nothing), `Ambiguous` when a prefix matches several
    /// records; both become CRI's NotFound.
    pub fn find(&self, id: &str) -> Result<Arc<Entry<R>>, TableError> {
        self.find_if_any(id)?.ok_or_else(|| TableError::NotFound {
            noun: R::NOUN,
            id: id.to_string(),
        })
    }

    /// As [`Table::find`], for the idempotent calls (Stop, Remove), where an
    /// unknown id is no error: `None`. Errors: `Ambiguous` only.
    pub fn find_if_any(&self, id: &str) -> Result<Option<Arc<Entry<R>>>, TableError> {
        if id.is_empty() {
            return Ok(None);
        }
        let inner = self.inner();
        if let Some(e) = inner.entries.get(id) {
            return Ok(Some(e.clone()));
        }
        let mut found = inner.entries.iter().filter(|(k, _)| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some((_, e)), None) => Ok(Some(e.clone())),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(TableError::Ambiguous {
                noun: R::NOUN,
                prefix: id.to_string(),
            }),
        }
    }

    /// Changes a record and persists it; on a store error the change is undone.
    pub fn update(&self, entry: &Entry<R>, change: impl FnOnce(&mut R)) -> Result<R, TableError> {
        let mut record = entry.record.lock().expect("record lock");
        let before = record.clone();
        change(&mut record);
        if let Err(e) = self.store.put(R::KIND, record.id(), &*record) {
            *record = before;
            return Err(e.into());
        }
        Ok(record.clone())
    }

    /// Deletes the record and releases its name. Absent ids succeed.
    pub fn remove(&self, id: &str) -> Result<(), TableError> {
        self.store.delete(R::KIND, id)?;
        let mut inner = self.inner();
        if let Some(entry) = inner.entries.remove(id) {
            let name = entry.snapshot().name();
            if inner.names.get(&name).is_some_and(|h| h == id) {
                inner.names.remove(&name);
            }
        }
        Ok(())
    }

    /// A snapshot of every record `wanted` selects, in no order.
    pub fn select(&self, wanted: impl Fn(&R) -> bool) -> Vec<R> {
        self.list().into_iter().filter(|r| wanted(r)).collect()
    }

    /// A snapshot of every record, in no order.
    pub fn list(&self) -> Vec<R> {
        let entries: Vec<_> = self.inner().entries.values().cloned().collect();
        entries.iter().map(|e| e.snapshot()).collect()
    }

    pub fn entries(&self) -> Vec<Arc<Entry<R>>> {
        self.inner().entries.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Thing {
        id: String,
        name: String,
        n: u32,
    }

    impl Record for Thing {
        const KIND: &'static str = "things";
        const NOUN: &'static str = "thing";
        fn id(&self) -> &str {
            &self.id
        }
        fn name(&self) -> String {
            self.name.clone()
        }
    }

    fn thing(id: &str, name: &str) -> Thing {
        Thing {
            id: id.into(),
            name: name.into(),
            n: 0,
        }
    }

    #[test]
    fn names_are_reserved_until_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let t: Table<Thing> = Table::load(Store::open(tmp.path()).unwrap()).unwrap();
        t.reserve_name("a", "id1").unwrap();
        assert!(matches!(
            t.reserve_name("a", "id2"),
            Err(TableError::NameTaken { holder, .. }) if holder == "id1"
        ));
        t.insert(thing("id1", "a")).unwrap();
        t.remove("id1").unwrap();
        t.reserve_name("a", "id2").unwrap();
        t.release_name("a", "other");
        assert!(
            t.reserve_name("a", "id3").is_err(),
            "only the holder releases"
        );
        t.release_name("a", "id2");
        t.reserve_name("a", "id3").unwrap();
    }

    #[test]
    fn records_and_names_survive_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let t: Table<Thing> = Table::load(Store::open(tmp.path()).unwrap()).unwrap();
        t.reserve_name("a", "abc123").unwrap();
        let e = t.insert(thing("abc123", "a")).unwrap();
        t.update(&e, |r| r.n = 7).unwrap();
        drop(t);
        let t: Table<Thing> = Table::load(Store::open(tmp.path()).unwrap()).unwrap();
        assert_eq!(t.find("abc").unwrap().snapshot().n, 7);
        assert!(t.reserve_name("a", "x").is_err());
    }

    #[test]
    fn prefix_lookup() {
        let tmp = tempfile::tempdir().unwrap();
        let t: Table<Thing> = Table::load(Store::open(tmp.path()).unwrap()).unwrap();
        t.insert(thing("abc1", "a")).unwrap();
        t.insert(thing("abc2", "b")).unwrap();
        assert!(matches!(t.find("abc"), Err(TableError::Ambiguous { .. })));
        assert!(matches!(
            t.find_if_any("abc"),
            Err(TableError::Ambiguous { .. })
        ));
        assert_eq!(t.find("abc2").unwrap().snapshot().name, "b");
        assert_eq!(t.find("abc1").unwrap().snapshot().name, "a");
        assert!(t.find_if_any("zzz").unwrap().is_none());
        assert!(t.find_if_any("").unwrap().is_none());
        assert!(matches!(t.find("zzz"), Err(TableError::NotFound { .. })));
        assert!(matches!(t.find(""), Err(TableError::NotFound { .. })));
    }

    /// Every lookup means the same to a CRI client: an unknown id or an
    /// ambiguous prefix is NotFound naming the kind and the id, a taken name
    /// AlreadyExists, a store fault Internal.
    #[test]
    fn lookup_errors_have_one_meaning() {
        let tmp = tempfile::tempdir().unwrap();
        let t: Table<Thing> = Table::load(Store::open(tmp.path()).unwrap()).unwrap();
        t.reserve_name("a", "abc1").unwrap();
        t.insert(thing("abc1", "a")).unwrap();
        t.insert(thing("abc2", "b")).unwrap();

        let status = |e: TableError| tonic::Status::from(CriError::from(e));
        let unknown = status(t.find("zzz").err().unwrap());
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert_eq!(unknown.message(), r#"thing "zzz" not found"#);
        let ambiguous = status(t.find("abc").err().unwrap());
        assert_eq!(ambiguous.code(), tonic::Code::NotFound);
        assert_eq!(ambiguous.message(), r#"thing id prefix "abc" is ambiguous"#);
        let taken = status(t.reserve_name("a", "other").err().unwrap());
        assert_eq!(taken.code(), tonic::Code::AlreadyExists);
        assert_eq!(taken.message(), r#"thing name "a" is reserved for abc1"#);
        let store = status(TableError::Store(StoreError::InvalidId("../x".into())));
        assert_eq!(store.code(), tonic::Code::Internal);
    }
}
