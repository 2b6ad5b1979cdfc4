//! Finding and loading the pod network's CNI configuration, as libcni does:
//! the first file (in lexical order) of `*.conf`, `*.conflist` or `*.json` in
//! the conf dir that holds a valid network config wins.

use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CniConfError {
    #[error("CNI conf dir {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no network config found in {0}")]
    NoConfig(PathBuf),
}

/// A network config list, normalized: a single-plugin `.conf` becomes a list of one.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl NetworkConfList {
    /// Parses one file's bytes; `None` with a reason when it is not a usable config.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<NetworkConfList, String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let name = doc
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("missing \"name\"")?
            .to_string();
        let cni_version = doc
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.4.0")
            .to_string();
        let is_list = path.extension().is_some_and(|e| e == "conflist");
        let plugins = if is_list {
            let plugins = doc
                .get("plugins")
                .and_then(Value::as_array)
                .ok_or("missing \"plugins\" list")?;
            if plugins.is_empty() {
                return Err("\"plugins\" is empty".into());
            }
            plugins.clone()
        } else {
            doc.get("type")
                .and_then(Value::as_str)
                .ok_or("missing \"type\"")?;
            vec![doc.clone()]
        };
        for (i, p) in plugins.iter().enumerate() {
            if p.get("type").and_then(Value::as_str).is_none() {
                return Err(format!("plugin {i} has no \"type\""));
            }
        }
        Ok(NetworkConfList {
            path: path.to_path_buf(),
            name,
            cni_version,
            plugins,
        })
    }
}

/// Loads the pod network's config from `dir`. Unusable files are skipped with a
/// debug log, as libcni does, so a stray file does not break the node.
pub fn load_default(dir: &Path) -> Result<NetworkConfList, CniConfError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CniConfError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        })
        .collect();
    files.sort();
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match NetworkConfList::parse(&path, &bytes) {
            Ok(conf) => return Ok(conf),
            Err(reason) => tracing::debug!(path = %path.display(), %reason, "skipping CNI config"),
        }
    }
    Err(CniConfError::NoConfig(dir.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_valid_file_in_lexical_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-broken.conflist"), "{").unwrap();
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("05-readme.txt"), "x").unwrap();
        let conf = load_default(dir.path()).unwrap();
        assert_eq!(conf.name, "a");
        assert_eq!(conf.plugins.len(), 1);
        assert_eq!(conf.plugins[0]["type"], "bridge");
    }

    #[test]
    fn empty_or_missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_default(dir.path()),
            Err(CniConfError::NoConfig(_))
        ));
        assert!(matches!(
            load_default(&dir.path().join("nope")),
            Err(CniConfError::ReadDir { .. })
        ));
    }

    #[test]
    fn conflist_needs_plugins_with_types() {
        let p = Path::new("x.conflist");
        assert!(NetworkConfList::parse(p, br#"{"name":"n","plugins":[]}"#).is_err());
        assert!(NetworkConfList::parse(p, br#"{"name":"n","plugins":[{}]}"#).is_err());
        assert!(NetworkConfList::parse(p, br#"{"plugins":[{"type":"x"}]}"#).is_err());
    }
}
