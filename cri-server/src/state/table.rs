//! An in-memory table of records of one kind (pods, containers), backed by the
//! store, with the name reservations CRI requires and a per-record operation
//! lock so that lifecycle calls on one object do not interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Store, StoreError};

pub trait Record: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// The store's kind directory.
    const KIND: &'static str;
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
    #[error("name {name:?} is reserved for {holder:?}")]
    NameTaken { name: String, holder: String },
    #[error("id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<R: Record> Table<R> {
    /// Loads every record of the kind and re-reserves their names.
    pub fn load(store: Store) -> Result<Table<R>, StoreError> {
        let mut inner = Inner {
            entries: HashMap::new(),
            names: HashMap::new(),
        };
        for (id, record) in store.load_all::<R>(R::KIND)? {
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

    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), TableError> {
        let mut inner = self.inner();
        if let Some(holder) = inner.names.get(name) {
            return Err(TableError::NameTaken {
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

    /// Finds a record by full id or unique id prefix.
    pub fn get(&self, id: &str) -> Result<Option<Arc<Entry<R>>>, TableError> {
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
            (Some(_), Some(_)) => Err(TableError::Ambiguous(id.to_string())),
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
        assert_eq!(t.get("abc").unwrap().unwrap().snapshot().n, 7);
        assert!(t.reserve_name("a", "x").is_err());
    }

    #[test]
    fn prefix_lookup() {
        let tmp = tempfile::tempdir().unwrap();
        let t: Table<Thing> = Table::load(Store::open(tmp.path()).unwrap()).unwrap();
        t.insert(thing("abc1", "a")).unwrap();
        t.insert(thing("abc2", "b")).unwrap();
        assert!(matches!(t.get("abc"), Err(TableError::Ambiguous(_))));
        assert_eq!(t.get("abc2").unwrap().unwrap().snapshot().name, "b");
        assert!(t.get("zzz").unwrap().is_none());
        assert!(t.get("").unwrap().is_none());
    }
}
