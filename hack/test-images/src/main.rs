//! Builds crius's test images and the images critest pulls, and pushes them
//! to a registry over plain HTTP.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;

use crius_test_images::busybox::{base_layer, read_busybox};
use crius_test_images::catalog::definitions;
use crius_test_images::registry::{PushStats, Registry};

#[derive(Parser)]
#[command(about = "Build the deterministic busybox test images and push them to a registry")]
struct Args {
    /// The registry, `host:port`, spoken to over plain HTTP.
    #[arg(long, required_unless_present = "list")]
    registry: Option<String>,
    /// Only these repositories (as `--list` names them, without the tag).
    #[arg(long, num_args = 1..)]
    only: Vec<String>,
    /// Print each `repo:tag` that would be pushed, and push nothing.
    #[arg(long)]
    list: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let busybox = read_busybox()?;
    let mut images = definitions(&busybox);
    if !args.only.is_empty() {
        if let Some(unknown) = args
            .only
            .iter()
            .find(|o| !images.iter().any(|d| d.repo == *o))
        {
            bail!("no image repository {unknown:?}; see --list");
        }
        images.retain(|d| args.only.iter().any(|o| o == d.repo));
    }
    if args.list {
        for reference in images.iter().flat_map(|d| d.references()) {
            println!("{reference}");
        }
        return Ok(());
    }

    let registry = Registry::new(args.registry.as_deref().unwrap_or_default());
    let base = base_layer(&busybox)?
        .build()
        .context("building the busybox base layer")?;
    let mut total = PushStats::default();
    for definition in &images {
        let image = definition
            .build(&base)
            .with_context(|| format!("building {}", definition.repo))?;
        total += registry
            .push_image(definition.repo, definition.tags, &image)
            .with_context(|| format!("pushing {}", definition.repo))?;
        for reference in definition.references() {
            println!("{reference} {}", image.manifest_digest);
        }
    }
    eprintln!(
        "{} tags of {} images in {:.2?}: {} blobs uploaded ({} bytes), {} already present",
        total.tags,
        images.len(),
        started.elapsed(),
        total.blobs_uploaded,
        total.bytes_uploaded,
        total.blobs_present
    );
    Ok(())
}
