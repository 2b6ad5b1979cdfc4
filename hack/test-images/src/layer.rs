//! Deterministic layer tarballs: the same entries always give the same bytes,
//! hence the same digests (sorted entries, mtime 0, uid/gid 0, no user or
//! group names, fixed modes, gzip without a timestamp and with a fixed OS byte).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::oci::sha256_digest;
use crate::BuildError;

/// gzip's "unknown" OS byte: the output must not depend on the build host.
const GZIP_OS_UNKNOWN: u8 = 255;

/// Prefix of an OCI whiteout file: `.wh.<name>` deletes `<name>` of lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker: the directory hides everything of lower layers.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, Clone)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        data: Arc<[u8]>,
    },
    /// Another name for the regular file at `target` (same layer).
    HardLink {
        target: String,
    },
    Symlink {
        target: String,
    },
}

/// The entries of one layer, by path relative to the root (no leading `/`).
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Node>,
    /// Whiteout markers written after every entry (see `whiteout_last`).
    trailing_whiteouts: Vec<String>,
}

/// A finished layer: the gzipped tar blob and its two digests.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The `application/vnd.oci.image.layer.v1.tar+gzip` blob.
    pub blob: Arc<[u8]>,
    /// `sha256:…` of `blob`, as the manifest names it.
    pub digest: String,
    /// `sha256:…` of the uncompressed tar, as the config's `rootfs.diff_ids` names it.
    pub diff_id: String,
}

fn relative(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory; its missing parents are added with mode 0755.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.insert(path, Node::Dir { mode })
    }

    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Arc<[u8]>>) -> &mut Self {
        let data = data.into();
        self.insert(path, Node::File { mode, data })
    }

    /// `path` becomes another name of the regular file `target` of this layer.
    pub fn hard_link(&mut self, path: &str, target: &str) -> &mut Self {
        let target = relative(target);
        self.insert(path, Node::HardLink { target })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let target = target.to_string();
        self.insert(path, Node::Symlink { target })
    }

    /// Deletes `path` of the lower layers (`.wh.<name>` beside it).
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let path = relative(path);
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let marker = format!("{parent}/{WHITEOUT_PREFIX}{name}");
        self.file(&marker, 0o644, Vec::new())
    }

    /// As `whiteout`, but the marker comes after every other entry of the
    /// tar instead of in path order (where `.wh.<name>` sorts before
    /// `<name>`): the order must not matter to an unpacker.
    pub fn whiteout_last(&mut self, path: &str) -> &mut Self {
        let path = relative(path);
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let marker = relative(&format!("{parent}/{WHITEOUT_PREFIX}{name}"));
        self.add_parents(&marker);
        self.trailing_whiteouts.push(marker);
        self
    }

    /// Hides everything the lower layers have under `dir`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let marker = format!("{}/{OPAQUE_MARKER}", relative(dir));
        self.file(&marker, 0o644, Vec::new())
    }

    fn insert(&mut self, path: &str, node: Node) -> &mut Self {
        let path = relative(path);
        self.add_parents(&path);
        self.entries.insert(path, node);
        self
    }

    /// The missing parent directories of `path` (relative), mode 0755.
    fn add_parents(&mut self, path: &str) {
        let mut parent = path;
        while let Some((up, _)) = parent.rsplit_once('/') {
            self.entries
                .entry(up.to_string())
                .or_insert(Node::Dir { mode: 0o755 });
            parent = up;
        }
    }

    /// Where each member of a hard-link group is written from: the member
    /// that comes first in tar order carries the data and the others link to
    /// it, so that an extractor always meets the data before a link to it.
    fn hard_link_sources(&self) -> Result<BTreeMap<&str, &str>, BuildError> {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (path, node) in &self.entries {
            if let Node::HardLink { target } = node {
                if !matches!(self.entries.get(target), Some(Node::File { .. })) {
                    return Err(BuildError::DanglingHardLink {
                        link: path.clone(),
                        target: target.clone(),
                    });
                }
                groups
                    .entry(target)
                    .or_insert_with(|| vec![target])
                    .push(path);
            }
        }
        let mut sources = BTreeMap::new();
        for members in groups.values() {
            let first = members.iter().min().copied().unwrap_or_default();
            for member in members {
                sources.insert(*member, first);
            }
        }
        Ok(sources)
    }

    /// The uncompressed tar, entries in path order.
    pub fn tar(&self) -> Result<Vec<u8>, BuildError> {
        let sources = self.hard_link_sources()?;
        let mut tar = tar::Builder::new(Vec::new());
        for (path, node) in &self.entries {
            let mut header = Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            let root = match node {
                Node::HardLink { target } => target.as_str(),
                _ => path.as_str(),
            };
            let first = sources.get(path.as_str()).copied().unwrap_or(path);
            match &self.entries[root] {
                Node::File { mode, .. } if first != path => {
                    header.set_entry_type(EntryType::Link);
                    header.set_mode(*mode);
                    tar.append_link(&mut header, path, first)?;
                }
                Node::Dir { mode } => {
                    header.set_entry_type(EntryType::Directory);
                    header.set_mode(*mode);
                    tar.append_data(&mut header, path, io::empty())?;
                }
                Node::File { mode, data } => {
                    header.set_entry_type(EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, &data[..])?;
                }
                Node::Symlink { target } => {
                    header.set_entry_type(EntryType::Symlink);
                    header.set_mode(0o777);
                    tar.append_link(&mut header, path, target)?;
                }
                Node::HardLink { .. } => unreachable!("a hard link's root is a regular file"),
            }
        }
        for marker in &self.trailing_whiteouts {
            let mut header = Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            header.set_entry_type(EntryType::Regular);
            header.set_mode(0o644);
            tar.append_data(&mut header, marker, io::empty())?;
        }
        Ok(tar.into_inner()?)
    }

    pub fn build(&self) -> Result<Layer, BuildError> {
        let tar = self.tar()?;
        let mut gz = GzBuilder::new()
            .mtime(0)
            .operating_system(GZIP_OS_UNKNOWN)
            .write(Vec::new(), Compression::default());
        gz.write_all(&tar)?;
        let blob = gz.finish()?;
        Ok(Layer {
            digest: sha256_digest(&blob),
            diff_id: sha256_digest(&tar),
            blob: blob.into(),
        })
    }
}

/// Test helper: (path, type, mode, link name, content) of each entry, in tar
/// order, asserting that each header is normalised.
#[cfg(test)]
pub(crate) fn tar_entries(tar_bytes: &[u8]) -> Vec<(String, EntryType, u32, String, Vec<u8>)> {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            assert_eq!(header.username().unwrap(), Some(""));
            assert_eq!(header.groupname().unwrap(), Some(""));
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (
                entry.path().unwrap().to_string_lossy().into_owned(),
                header.entry_type(),
                header.mode().unwrap(),
                link,
                content,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn entries_are_sorted_with_parents_and_normalised_headers() {
        let mut layer = LayerBuilder::new();
        layer
            .file("/usr/bin/b", 0o755, b"b".to_vec())
            .dir("/tmp", 0o1777)
            .symlink("/usr/bin/a", "b")
            .whiteout("/etc/gone")
            .opaque("/var");
        let tar = layer.tar().unwrap();
        let got = tar_entries(&tar);
        let expected = vec![
            ("etc", EntryType::Directory, 0o755, "", &b""[..]),
            ("etc/.wh.gone", EntryType::Regular, 0o644, "", b""),
            ("tmp", EntryType::Directory, 0o1777, "", b""),
            ("usr", EntryType::Directory, 0o755, "", b""),
            ("usr/bin", EntryType::Directory, 0o755, "", b""),
            ("usr/bin/a", EntryType::Symlink, 0o777, "b", b""),
            ("usr/bin/b", EntryType::Regular, 0o755, "", b"b"),
            ("var", EntryType::Directory, 0o755, "", b""),
            ("var/.wh..wh..opq", EntryType::Regular, 0o644, "", b""),
        ];
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(p, k, m, l, c)| (p.to_string(), k, m, l.to_string(), c.to_vec()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn whiteout_last_comes_after_every_entry() {
        let mut layer = LayerBuilder::new();
        layer
            .whiteout_last("/data/a1")
            .file("/data/a1/newfile", 0o644, b"new".to_vec())
            .whiteout("/data/b1");
        let paths: Vec<String> = tar_entries(&layer.tar().unwrap())
            .into_iter()
            .map(|(path, ..)| path)
            .collect();
        assert_eq!(
            paths,
            [
                "data",
                "data/.wh.b1",
                "data/a1",
                "data/a1/newfile",
                "data/.wh.a1"
            ]
        );
    }

    #[test]
    fn hard_link_group_data_goes_to_the_first_member_in_tar_order() {
        let mut layer = LayerBuilder::new();
        layer
            .file("/bin/busybox", 0o755, b"ELF".to_vec())
            .hard_link("/bin/ash", "/bin/busybox")
            .hard_link("/usr/bin/env", "/bin/busybox");
        let got: Vec<_> = tar_entries(&layer.tar().unwrap())
            .into_iter()
            .filter(|(_, kind, ..)| *kind != EntryType::Directory)
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "bin/ash".into(),
                    EntryType::Regular,
                    0o755,
                    String::new(),
                    b"ELF".to_vec()
                ),
                (
                    "bin/busybox".into(),
                    EntryType::Link,
                    0o755,
                    "bin/ash".into(),
                    vec![]
                ),
                (
                    "usr/bin/env".into(),
                    EntryType::Link,
                    0o755,
                    "bin/ash".into(),
                    vec![]
                ),
            ]
        );
    }

    #[test]
    fn hard_link_to_a_missing_file_is_refused() {
        let mut layer = LayerBuilder::new();
        layer.hard_link("/bin/ls", "/bin/busybox");
        assert!(matches!(
            layer.tar(),
            Err(BuildError::DanglingHardLink { .. })
        ));
    }

    #[test]
    fn build_is_deterministic_and_gzip_has_no_timestamp() {
        let mut layer = LayerBuilder::new();
        layer.file("/etc/hostname", 0o644, b"crius\n".to_vec());
        let (a, b) = (layer.build().unwrap(), layer.build().unwrap());
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.blob, b.blob);
        assert_eq!(&a.blob[4..8], &[0, 0, 0, 0], "gzip MTIME");
        assert_eq!(a.blob[9], GZIP_OS_UNKNOWN);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&a.blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(a.diff_id, sha256_digest(&tar));
    }
}
