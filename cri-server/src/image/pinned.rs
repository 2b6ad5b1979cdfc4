//! Pinned images: the config's `pinned_images`, which ListImages and
//! ImageStatus report with `Image.pinned = true` so that kubelet's image
//! garbage collection never removes them (CRI `Image.pinned`, kubelet
//! pkg/kubelet/images/image_gc_manager.go; CRI-O's and containerd's
//! `pinned_images`).
//!
//! An entry is an image ID (`sha256:<hex>` or the 64 hex digits alone) or an
//! image reference, normalized as every reference is (`busybox` pins
//! `docker.io/library/busybox:latest`); a reference with a digest pins the
//! image that repository serves under that manifest digest (any tag beside
//! the digest is ignored, as a pull by `repo:tag@digest` records only the
//! digest's name).

use super::reference::{is_sha256_hex, Reference};
use super::store::ImageRecord;
use super::ImageError;

/// The pinned entries, each parsed once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedImages {
    /// `sha256:<hex>` image IDs.
    ids: Vec<String>,
    /// Normalized `registry/repository:tag` names.
    repo_tags: Vec<String>,
    /// Normalized `registry/repository@sha256:<manifest digest>` names.
    repo_digests: Vec<String>,
}

impl PinnedImages {
    /// Parses the config's entries. Errors: an entry that is neither an ID
    /// nor a valid reference, naming it.
    pub fn parse(entries: &[String]) -> Result<PinnedImages, ImageError> {
        let mut pinned = PinnedImages::default();
        for entry in entries {
            let hex = entry.strip_prefix("sha256:").unwrap_or(entry);
            if is_sha256_hex(hex) {
                pinned.ids.push(format!("sha256:{hex}"));
                continue;
            }
            let reference = Reference::parse(entry).map_err(|e| ImageError::PinnedImage {
                entry: entry.clone(),
                reason: e.reason,
            })?;
            match (reference.digest(), reference.repo_tag()) {
                (Some(digest), _) => pinned.repo_digests.push(reference.repo_digest(digest)),
                (None, Some(tag)) => pinned.repo_tags.push(tag),
                (None, None) => unreachable!("a parsed reference has a tag or a digest"),
            }
        }
        Ok(pinned)
    }

    /// True when an entry names this image: its ID, one of its tags or one
    /// of its repo digests.
    pub fn pins(&self, image: &ImageRecord) -> bool {
        self.ids.contains(&image.id)
            || image.repo_tags.iter().any(|t| self.repo_tags.contains(t))
            || image
                .repo_digests
                .iter()
                .any(|d| self.repo_digests.contains(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(id: char, tags: &[&str], manifest: char) -> ImageRecord {
        let name = tags[0].rsplit_once(':').unwrap().0;
        ImageRecord {
            id: digest(id),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![format!("{name}@{}", digest(manifest))],
            size: 1,
            chain_ids: vec![],
            config: Default::default(),
            blobs: vec![],
        }
    }

    fn pinned(entries: &[&str]) -> PinnedImages {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        PinnedImages::parse(&entries).unwrap()
    }

    #[test]
    fn entries_match_by_normalized_reference_id_and_digest() {
        let busybox = image(
            '1',
            &[
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:1.36",
            ],
            'a',
        );
        let pause = image('2', &["registry.k8s.io/pause:3.10"], 'b');
        let local = image('3', &["127.0.0.1:5000/crius/busybox:latest"], 'c');
        let cases: &[(&str, [bool; 3])] = &[
            // Normalized: a short name is docker.io/library/…:latest.
            ("busybox", [true, false, false]),
            ("docker.io/library/busybox:1.36", [true, false, false]),
            ("index.docker.io/library/busybox:1.36", [true, false, false]),
            ("busybox:1.37", [false, false, false]),
            ("registry.k8s.io/pause:3.10", [false, true, false]),
            ("registry.k8s.io/pause", [false, false, false]),
            ("127.0.0.1:5000/crius/busybox", [false, false, true]),
            // By ID, with or without its algorithm.
            (&digest('2'), [false, true, false]),
            (&digest('3')[7..], [false, false, true]),
            // By manifest digest in its repository, a tag beside it or not.
            (
                &format!("registry.k8s.io/pause@{}", digest('b')),
                [false, true, false],
            ),
            (&format!("busybox:9@{}", digest('a')), [true, false, false]),
            (
                &format!("registry.k8s.io/pause@{}", digest('a')),
                [false, false, false],
            ),
        ];
        for (entry, expected) in cases {
            let p = pinned(&[entry]);
            let seen = [p.pins(&busybox), p.pins(&pause), p.pins(&local)];
            assert_eq!(&seen, expected, "{entry}");
        }
        assert!(!PinnedImages::default().pins(&busybox));
        let both = pinned(&["registry.k8s.io/pause:3.10", &digest('3')]);
        assert!(!both.pins(&busybox) && both.pins(&pause) && both.pins(&local));
    }

    #[test]
    fn a_bad_entry_is_refused_naming_the_key_and_the_entry() {
        let err = PinnedImages::parse(&["Bad/Name:1".to_string()]).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("config key pinned_images: \"Bad/Name:1\""),
            "{message}"
        );
    }
}
