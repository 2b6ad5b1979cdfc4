//! The part of CRI's list filters that pods and containers share: an id
//! prefix, a state, a label selector (ListPodSandbox, ListContainers and
//! their stats calls).

use std::collections::HashMap;

/// One list filter's common terms; an empty id prefix, no state and an
/// empty selector select everything.
#[derive(Debug, Clone, Copy)]
pub struct Selector<'a> {
    /// The wanted id or a prefix of it; empty: any.
    pub id_prefix: &'a str,
    /// The wanted CRI state as its wire number; `None`: any.
    pub state: Option<i32>,
    /// Labels the record must carry with these values; empty: any.
    pub labels: &'a HashMap<String, String>,
}

impl<'a> Selector<'a> {
    /// The selector of a CRI filter's id, state (wire number) and labels.
    pub fn new(
        id_prefix: &'a str,
        state: Option<i32>,
        labels: &'a HashMap<String, String>,
    ) -> Selector<'a> {
        Selector {
            id_prefix,
            state,
            labels,
        }
    }

    /// True when a record with this id, CRI state and labels is selected.
    pub fn selects(&self, id: &str, state: i32, labels: &HashMap<String, String>) -> bool {
        id.starts_with(self.id_prefix)
            && self.state.is_none_or(|s| s == state)
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_term_must_hold() {
        let have = labels(&[("app", "web"), ("tier", "front")]);
        let none = labels(&[]);
        let any = Selector {
            id_prefix: "",
            state: None,
            labels: &none,
        };
        assert!(any.selects("abc", 1, &have));
        assert!(any.selects("abc", 1, &none));
        let web = labels(&[("app", "web")]);
        let exact = Selector {
            id_prefix: "ab",
            state: Some(1),
            labels: &web,
        };
        assert!(exact.selects("abc", 1, &have));
        assert!(!exact.selects("xbc", 1, &have), "id prefix");
        assert!(!exact.selects("abc", 0, &have), "state");
        assert!(!exact.selects("abc", 1, &none), "label missing");
        let db = labels(&[("app", "db")]);
        assert!(
            !Selector { labels: &db, ..any }.selects("abc", 1, &have),
            "label value"
        );
    }
}
