//! The images, as data: crius's own test images and those the CRI conformance
//! suite (critest, cri-tools v1.37.0) pulls, under the repository paths and
//! tags the suite names. The runtime's registry mirrors send the suite's
//! hosts (registry.k8s.io, gcr.io, k8s.gcr.io, public.ecr.aws, …) to the
//! loopback registry, so the host part of the suite's names is dropped here.
//!
//! Left out: `k8s-staging-cri-tools/test-image-digest`, which the suite pulls
//! only by an upstream manifest digest that no image built here can have.

use std::sync::Arc;

use crate::busybox::{add_accounts, DEFAULT_PATH};
use crate::layer::{Layer, LayerBuilder};
use crate::oci::{Image, RunConfig};
use crate::BuildError;

/// One image, pushed under each of its tags.
#[derive(Debug, Clone)]
pub struct Definition {
    pub repo: &'static str,
    pub tags: &'static [&'static str],
    pub run: RunConfig,
    /// The layers over the shared busybox base layer, bottom first.
    pub layers: Vec<LayerBuilder>,
}

impl Definition {
    /// The image: `base` and then this definition's own layers.
    pub fn build(&self, base: &Layer) -> Result<Image, BuildError> {
        let mut layers = vec![base.clone()];
        for layer in &self.layers {
            layers.push(layer.build()?);
        }
        Ok(Image::assemble(layers, &self.run))
    }

    /// `repo:tag` for each tag.
    pub fn references(&self) -> impl Iterator<Item = String> + '_ {
        self.tags.iter().map(|tag| format!("{}:{tag}", self.repo))
    }
}

/// A file of the merged `/data` tree of `crius/layers:latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergedEntry {
    Dir,
    File(&'static str),
    /// The same inode (and so the same content) as the file at this path.
    HardLinkOf(&'static str),
    Symlink(&'static str),
}

/// Everything under `/data` once the layers of `crius/layers:latest` are
/// unpacked in order, in path order: nothing else may be there. Gone are
/// `/data/removed.txt` and `/data/removed-dir` (whiteouts), and
/// `/data/opaque/old.txt` and `/data/opaque/old-dir` (the upper layer made
/// `/data/opaque` opaque); no `.wh.` file is left; `/data/replaced.txt` has the
/// upper layer's content; `/data/recreated-before` and `/data/recreated-after`,
/// whited out and re-created by the upper layer (its whiteout before, resp.
/// after, the new directory in the tar), hold only the upper layer's `newfile`.
/// The layers below `/data` are the busybox base.
pub const LAYERS_MERGED_DATA: &[(&str, MergedEntry)] = &[
    ("/data", MergedEntry::Dir),
    (
        "/data/keep.txt",
        MergedEntry::File("kept from the lower layer\n"),
    ),
    ("/data/links", MergedEntry::Dir),
    (
        "/data/links/hardlink.txt",
        MergedEntry::HardLinkOf("/data/links/original.txt"),
    ),
    ("/data/links/original.txt", MergedEntry::File("linked\n")),
    (
        "/data/links/symlink.txt",
        MergedEntry::Symlink("original.txt"),
    ),
    ("/data/opaque", MergedEntry::Dir),
    (
        "/data/opaque/new.txt",
        MergedEntry::File("added by the upper layer\n"),
    ),
    ("/data/recreated-after", MergedEntry::Dir),
    (
        "/data/recreated-after/newfile",
        MergedEntry::File("re-created by the upper layer\n"),
    ),
    ("/data/recreated-before", MergedEntry::Dir),
    (
        "/data/recreated-before/newfile",
        MergedEntry::File("re-created by the upper layer\n"),
    ),
    ("/data/replaced.txt", MergedEntry::File("upper\n")),
];

/// The two layers of `crius/layers:latest` above the base, lower first.
fn whiteout_layers() -> Vec<LayerBuilder> {
    let mut lower = LayerBuilder::new();
    lower
        .file("/data/keep.txt", 0o644, &b"kept from the lower layer\n"[..])
        .file("/data/replaced.txt", 0o644, &b"lower\n"[..])
        .file("/data/removed.txt", 0o644, &b"removed by a whiteout\n"[..])
        .file(
            "/data/removed-dir/file.txt",
            0o644,
            &b"removed with its directory\n"[..],
        )
        .file(
            "/data/opaque/old.txt",
            0o644,
            &b"hidden by the opaque directory\n"[..],
        )
        .file("/data/opaque/old-dir/deep.txt", 0o644, &b"hidden too\n"[..])
        .file("/data/recreated-before/old", 0o644, &b"whited out\n"[..])
        .file("/data/recreated-after/old", 0o644, &b"whited out\n"[..]);
    let mut upper = LayerBuilder::new();
    upper
        .file("/data/replaced.txt", 0o644, &b"upper\n"[..])
        .whiteout("/data/removed.txt")
        .whiteout("/data/removed-dir")
        .opaque("/data/opaque")
        .file(
            "/data/opaque/new.txt",
            0o644,
            &b"added by the upper layer\n"[..],
        )
        .file("/data/links/original.txt", 0o644, &b"linked\n"[..])
        .hard_link("/data/links/hardlink.txt", "/data/links/original.txt")
        .symlink("/data/links/symlink.txt", "original.txt")
        // A whiteout of a directory the same layer re-creates, in both tar
        // orders: it hides only the lower layer's content.
        .whiteout("/data/recreated-before")
        .file(
            "/data/recreated-before/newfile",
            0o644,
            &b"re-created by the upper layer\n"[..],
        )
        .whiteout_last("/data/recreated-after")
        .file(
            "/data/recreated-after/newfile",
            0o644,
            &b"re-created by the upper layer\n"[..],
        );
    vec![lower, upper]
}

/// The layers of `crius/many-layers:latest`, the busybox base included:
/// more than the 59 whose absolute paths fit the page of overlay mount
/// options, as many as containerd's tests run (issue 9, item 5).
pub const MANY_LAYERS: usize = 125;

/// The layers of `crius/many-layers:latest` above the base, lower first:
/// layer `i` (the base is 0) adds `/layers/<i>` holding `layer <i>\n` and
/// writes the same to `/layers/top`, where the top layer's must show.
fn many_layers() -> Vec<LayerBuilder> {
    (1..MANY_LAYERS)
        .map(|i| {
            let content = format!("layer {i}\n").into_bytes();
            let mut layer = LayerBuilder::new();
            layer
                .file(&format!("/layers/{i}"), 0o644, content.clone())
                .file("/layers/top", 0o644, content);
            layer
        })
        .collect()
}

fn shell() -> RunConfig {
    RunConfig {
        env: vec![DEFAULT_PATH],
        cmd: vec!["sh"],
        ..RunConfig::default()
    }
}

fn shell_as(user: &'static str) -> RunConfig {
    RunConfig {
        user: Some(user),
        ..shell()
    }
}

fn one_layer(fill: impl FnOnce(&mut LayerBuilder)) -> Vec<LayerBuilder> {
    let mut layer = LayerBuilder::new();
    fill(&mut layer);
    vec![layer]
}

/// A layer holding `/test-image-marker`, which gives the image its own id.
fn marker(name: &str) -> Vec<LayerBuilder> {
    one_layer(|l| {
        l.file(
            "/test-image-marker",
            0o644,
            format!("{name}\n").into_bytes(),
        );
    })
}

fn nginx_layers() -> Vec<LayerBuilder> {
    one_layer(|l| {
        l.file(
            "/usr/sbin/nginx",
            0o755,
            &include_bytes!("../files/nginx")[..],
        )
        .file(
            "/usr/share/nginx/html/index.html",
            0o644,
            &b"<html><body><h1>Welcome to nginx!</h1></body></html>\n"[..],
        );
    })
}

/// Every image, crius's first. `busybox` is the bytes of this host's busybox
/// (the nonewprivs image holds a setuid copy of it).
pub fn definitions(busybox: &Arc<[u8]>) -> Vec<Definition> {
    let mut images = vec![
        Definition {
            repo: "crius/busybox",
            tags: &["latest"],
            run: RunConfig {
                labels: vec![("io.crius.test-image", "busybox")],
                ..shell()
            },
            layers: vec![],
        },
        Definition {
            repo: "crius/busybox-user",
            tags: &["latest"],
            run: shell_as("1000:1000"),
            layers: one_layer(|l| {
                add_accounts(
                    l,
                    &["crius:x:1000:1000:crius:/home/crius:/bin/sh"],
                    &["crius:x:1000:"],
                );
                l.dir("/home/crius", 0o755);
            }),
        },
        Definition {
            repo: "crius/httpd",
            tags: &["latest"],
            run: RunConfig {
                env: vec![DEFAULT_PATH],
                entrypoint: vec!["httpd", "-f", "-p", "80", "-h", "/www"],
                exposed_ports: vec!["80/tcp"],
                // busybox httpd, as PID 1, installs no SIGTERM handler: a
                // gentler signal would only wait out the stop timeout.
                stop_signal: Some("SIGKILL"),
                ..RunConfig::default()
            },
            layers: one_layer(|l| {
                l.file("/www/index.html", 0o644, &b"crius-httpd-ok\n"[..]);
            }),
        },
        Definition {
            repo: "crius/layers",
            tags: &["latest"],
            run: shell(),
            layers: whiteout_layers(),
        },
        Definition {
            repo: "crius/many-layers",
            tags: &["latest"],
            run: shell(),
            layers: many_layers(),
        },
        // A WorkingDir that none of its layers holds: the runtime makes it.
        Definition {
            repo: "crius/workdir",
            tags: &["latest"],
            run: RunConfig {
                working_dir: Some("/app/work"),
                ..shell()
            },
            layers: vec![],
        },
        // Mount targets behind symlinks whose targets are missing (issue 9, item 1): absolute,
        // relative climbing above `/`, and resolv.conf as Ubuntu ships it.
        Definition {
            repo: "crius/symlinks",
            tags: &["latest"],
            run: shell(),
            layers: one_layer(|l| {
                l.symlink("/etc/localtime", "/usr/share/zoneinfo/Nowhere")
                    .symlink(
                        "/etc/resolv.conf",
                        "../run/systemd/resolve/stub-resolv.conf",
                    )
                    .symlink("/data", "/missing")
                    .symlink("/opt/app/logs", "../../../../../../crius-app-logs");
            }),
        },
    ];
    images.extend(critest_definitions(busybox));
    images
}

fn critest_definitions(busybox: &Arc<[u8]>) -> Vec<Definition> {
    let mut images = vec![
        Definition {
            repo: "e2e-test-images/busybox",
            tags: &["1.29-2"],
            run: shell(),
            layers: vec![],
        },
        // The image benchmarks list these (public.ecr.aws/docker/library/busybox).
        Definition {
            repo: "docker/library/busybox",
            tags: &["1", "1-glibc", "1-musl", "1-uclibc", "1.35.0-glibc"],
            run: shell(),
            layers: vec![],
        },
        Definition {
            repo: "e2e-test-images/nginx",
            tags: &["1.14-2"],
            run: RunConfig {
                env: vec![DEFAULT_PATH],
                cmd: vec!["nginx", "-g", "daemon off;"],
                exposed_ports: vec!["80/tcp"],
                stop_signal: Some("SIGTERM"),
                ..RunConfig::default()
            },
            layers: nginx_layers(),
        },
        Definition {
            repo: "k8s-staging-cri-tools/hostnet-nginx-amd64",
            tags: &["latest"],
            run: RunConfig {
                env: vec![DEFAULT_PATH, "NGINX_LISTEN=127.0.0.1:12003"],
                cmd: vec!["nginx", "-g", "daemon off;"],
                exposed_ports: vec!["12003/tcp"],
                stop_signal: Some("SIGQUIT"),
                ..RunConfig::default()
            },
            layers: nginx_layers(),
        },
        Definition {
            repo: "e2e-test-images/httpd",
            tags: &["2.4.39-4"],
            run: RunConfig {
                env: vec![DEFAULT_PATH],
                cmd: vec!["httpd-foreground"],
                working_dir: Some("/usr/local/apache2"),
                exposed_ports: vec!["80/tcp"],
                stop_signal: Some("SIGWINCH"),
                ..RunConfig::default()
            },
            layers: one_layer(|l| {
                l.file(
                    "/usr/local/bin/httpd-foreground",
                    0o755,
                    &include_bytes!("../files/httpd-foreground")[..],
                )
                .file(
                    "/usr/local/apache2/htdocs/index.html",
                    0o644,
                    &b"<html><body><h1>It works!</h1></body></html>\n"[..],
                );
            }),
        },
        Definition {
            repo: "e2e-test-images/nonewprivs",
            tags: &["1.3"],
            run: RunConfig {
                env: vec![DEFAULT_PATH],
                entrypoint: vec!["/usr/local/bin/nonewprivs"],
                ..RunConfig::default()
            },
            layers: one_layer(|l| {
                l.file("/usr/local/bin/busybox-setuid", 0o4755, busybox.clone())
                    .file(
                        "/usr/local/bin/nonewprivs",
                        0o755,
                        &include_bytes!("../files/nonewprivs")[..],
                    )
                    .file(
                        "/etc/busybox.conf",
                        0o600,
                        &include_bytes!("../files/busybox.conf")[..],
                    );
            }),
        },
        // registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9: one image.
        Definition {
            repo: "pause",
            tags: &["3.9"],
            run: RunConfig {
                user: Some("65535:65535"),
                env: vec![DEFAULT_PATH],
                entrypoint: vec!["/pause"],
                ..RunConfig::default()
            },
            layers: one_layer(|l| {
                l.file("/pause", 0o755, &include_bytes!("../files/pause")[..]);
            }),
        },
        Definition {
            repo: "k8s-staging-cri-tools/test-image-predefined-group",
            tags: &["latest"],
            run: shell_as("1000"),
            layers: one_layer(|l| {
                add_accounts(
                    l,
                    &["default-user:x:1000:1000:default-user:/home/default-user:/bin/sh"],
                    &[
                        "default-user:x:1000:",
                        "group-defined-in-image:x:50000:default-user",
                    ],
                );
                l.dir("/home/default-user", 0o755);
            }),
        },
    ];
    // One image each, told apart by a marker file.
    for (repo, tags, mark) in [
        (
            "k8s-staging-cri-tools/test-image-latest",
            &["latest"][..],
            "test-image-latest",
        ),
        (
            "k8s-staging-cri-tools/test-image-1",
            &["latest"][..],
            "test-image-1",
        ),
        (
            "k8s-staging-cri-tools/test-image-2",
            &["latest"][..],
            "test-image-2",
        ),
        (
            "k8s-staging-cri-tools/test-image-3",
            &["latest"][..],
            "test-image-3",
        ),
        (
            "k8s-staging-cri-tools/test-image-tags",
            &["1", "2", "3"][..],
            "test-image-tags",
        ),
    ] {
        images.push(Definition {
            repo,
            tags,
            run: shell(),
            layers: marker(mark),
        });
    }
    // test-image-tag:test and :all are two images under one repository.
    for (tags, mark) in [
        (&["test"][..], "test-image-tag:test"),
        (&["all"][..], "test-image-tag:all"),
    ] {
        images.push(Definition {
            repo: "k8s-staging-cri-tools/test-image-tag",
            tags,
            run: shell(),
            layers: marker(mark),
        });
    }
    // The image specs read the user of these from ImageStatus.
    for (repo, user) in [
        ("k8s-staging-cri-tools/test-image-user-uid", "1002"),
        ("k8s-staging-cri-tools/test-image-user-username", "www-data"),
        (
            "k8s-staging-cri-tools/test-image-user-uid-group",
            "1003:1004",
        ),
        (
            "k8s-staging-cri-tools/test-image-user-username-group",
            "www-data:1004",
        ),
    ] {
        images.push(Definition {
            repo,
            tags: &["latest"],
            run: shell_as(user),
            layers: vec![],
        });
    }
    images
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use tar::EntryType;

    use super::*;
    use crate::busybox::{base_layer, read_busybox};
    use crate::layer::{tar_entries, OPAQUE_MARKER, WHITEOUT_PREFIX};

    /// Reads this host's busybox: Debian's `busybox` package must be installed.
    fn busybox() -> Arc<[u8]> {
        read_busybox().expect("these tests need Debian's busybox package (/bin/busybox)")
    }

    fn build_all() -> Vec<(Definition, Image)> {
        let busybox = busybox();
        let base = base_layer(&busybox).unwrap().build().unwrap();
        definitions(&busybox)
            .into_iter()
            .map(|d| {
                let image = d.build(&base).unwrap();
                (d, image)
            })
            .collect()
    }

    #[test]
    fn building_twice_gives_the_same_digests() {
        let digests = |images: Vec<(Definition, Image)>| -> Vec<String> {
            images
                .into_iter()
                .map(|(_, image)| image.manifest_digest)
                .collect()
        };
        assert_eq!(digests(build_all()), digests(build_all()));
    }

    #[test]
    fn every_reference_is_pushed_once_and_test_images_have_their_own_ids() {
        let images = build_all();
        let references: Vec<String> = images.iter().flat_map(|(d, _)| d.references()).collect();
        let unique: BTreeSet<&String> = references.iter().collect();
        assert_eq!(
            unique.len(),
            references.len(),
            "a repo:tag is defined twice"
        );

        let test_image_ids: Vec<&str> = images
            .iter()
            .filter(|(d, _)| d.repo.starts_with("k8s-staging-cri-tools/test-image"))
            .map(|(_, image)| image.config_digest.as_str())
            .collect();
        let unique: BTreeSet<&&str> = test_image_ids.iter().collect();
        assert_eq!(
            unique.len(),
            test_image_ids.len(),
            "two test-image variants share an id"
        );
    }

    #[test]
    fn base_layer_has_busybox_applets_as_hard_links_and_its_libraries() {
        let busybox = busybox();
        let tar = base_layer(&busybox).unwrap().tar().unwrap();
        let entries: BTreeMap<String, (EntryType, u32, String, Vec<u8>)> = tar_entries(&tar)
            .into_iter()
            .map(|(path, kind, mode, link, content)| (path, (kind, mode, link, content)))
            .collect();

        // The data sits on the first applet in tar order; every other name links to it.
        let (data_path, (_, mode, _, content)) = entries
            .iter()
            .find(|(_, (kind, _, _, content))| {
                *kind == EntryType::Regular && content[..] == busybox[..]
            })
            .expect("the busybox binary");
        assert_eq!(*mode, 0o755);
        assert_eq!(content.len(), busybox.len());
        for applet in [
            "bin/busybox",
            "bin/sh",
            "bin/ls",
            "usr/sbin/httpd",
            "bin/pidof",
        ] {
            if applet != data_path {
                let (kind, _, link, _) = &entries[applet];
                assert_eq!(
                    (*kind, link.as_str()),
                    (EntryType::Link, data_path.as_str()),
                    "{applet}"
                );
            }
        }
        assert!(!entries
            .values()
            .any(|(kind, ..)| *kind == EntryType::Symlink));

        for library in [
            "lib/x86_64-linux-gnu/libc.so.6",
            "lib64/ld-linux-x86-64.so.2",
        ] {
            assert_eq!(entries[library].0, EntryType::Regular, "{library}");
        }
        assert_eq!(entries["tmp"].1, 0o1777);
        assert_eq!(entries["root"].1, 0o700);
        for dir in ["proc", "sys", "dev", "var/run"] {
            assert_eq!(entries[dir].0, EntryType::Directory, "{dir}");
        }
        let passwd = String::from_utf8(entries["etc/passwd"].3.clone()).unwrap();
        assert!(passwd.contains("root:x:0:0:") && passwd.contains("nobody:x:65534:65534:"));
        for script in ["usr/bin/pgrep", "usr/bin/ipcs"] {
            assert!(entries[script].3.starts_with(b"#!/bin/sh\n"), "{script}");
        }
    }

    #[test]
    fn many_layers_image_has_that_many_distinct_layers() {
        let busybox = busybox();
        let base = base_layer(&busybox).unwrap().build().unwrap();
        let definition = definitions(&busybox)
            .into_iter()
            .find(|d| d.repo == "crius/many-layers")
            .unwrap();
        let image = definition.build(&base).unwrap();
        assert_eq!(image.layers.len(), MANY_LAYERS);
        let digests: BTreeSet<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(digests.len(), MANY_LAYERS, "a layer repeats");
        let last = tar_entries(&many_layers().last().unwrap().tar().unwrap());
        let files: Vec<(&str, &[u8])> = last
            .iter()
            .filter(|(_, kind, ..)| *kind == EntryType::Regular)
            .map(|(path, .., content)| (path.as_str(), &content[..]))
            .collect();
        assert_eq!(
            files,
            [
                ("layers/124", &b"layer 124\n"[..]),
                ("layers/top", &b"layer 124\n"[..])
            ]
        );
    }

    /// Unpacks tars in order as an OCI runtime must: whiteouts delete the
    /// lower layers' paths, an opaque marker empties the directory below.
    fn merge(tars: &[Vec<u8>]) -> BTreeMap<String, (EntryType, String, Vec<u8>)> {
        let mut tree: BTreeMap<String, (EntryType, String, Vec<u8>)> = BTreeMap::new();
        for tar in tars {
            let entries = tar_entries(tar);
            for (path, ..) in &entries {
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
                let hidden = if name == OPAQUE_MARKER {
                    format!("{dir}/")
                } else if let Some(name) = name.strip_prefix(WHITEOUT_PREFIX) {
                    let whited_out = format!("{dir}/{name}");
                    tree.remove(&whited_out);
                    format!("{whited_out}/")
                } else {
                    continue;
                };
                tree.retain(|p, _| !p.starts_with(&hidden));
            }
            for (path, kind, _, link, content) in entries {
                let name = path.rsplit('/').next().unwrap_or_default();
                if !name.starts_with(WHITEOUT_PREFIX) {
                    tree.insert(path, (kind, link, content));
                }
            }
        }
        tree
    }

    #[test]
    fn layers_image_merges_to_the_documented_tree() {
        let tars: Vec<Vec<u8>> = whiteout_layers().iter().map(|l| l.tar().unwrap()).collect();
        let merged = merge(&tars);

        // Describe both sides alike: a line a path, and the hard-link pairs.
        let mut got = BTreeMap::new();
        let mut got_links = BTreeSet::new();
        for (path, (kind, link, content)) in &merged {
            let description = match kind {
                EntryType::Directory => "dir".to_string(),
                EntryType::Regular => format!("file {}", String::from_utf8_lossy(content)),
                EntryType::Symlink => format!("symlink {link}"),
                EntryType::Link => {
                    got_links.insert(BTreeSet::from([format!("/{path}"), format!("/{link}")]));
                    format!("file {}", String::from_utf8_lossy(&merged[link].2))
                }
                other => panic!("unexpected {other:?} at {path}"),
            };
            got.insert(format!("/{path}"), description);
        }
        let mut expected = BTreeMap::new();
        let mut expected_links = BTreeSet::new();
        let content_of = |path: &str| match LAYERS_MERGED_DATA.iter().find(|(p, _)| *p == path) {
            Some((_, MergedEntry::File(content))) => *content,
            other => panic!("{path} is {other:?}, not a file"),
        };
        for (path, entry) in LAYERS_MERGED_DATA {
            let description = match entry {
                MergedEntry::Dir => "dir".to_string(),
                MergedEntry::File(content) => format!("file {content}"),
                MergedEntry::Symlink(target) => format!("symlink {target}"),
                MergedEntry::HardLinkOf(other) => {
                    expected_links.insert(BTreeSet::from([path.to_string(), other.to_string()]));
                    format!("file {}", content_of(other))
                }
            };
            expected.insert(path.to_string(), description);
        }
        assert_eq!(got, expected);
        assert_eq!(got_links, expected_links);
    }
}
