//! Keeps the caller's own OOM score across libcontainer calls.
//!
//! libcontainer writes the container process's `oomScoreAdj` into the *calling* process's
//! /proc/self/oom_score_adj so that the children it clones inherit it. runc's caller exits right
//! after; our caller is a long-lived shim, which must not end up with the container's score
//! (1000 for best-effort pods: killed first, losing the exit status).

use std::fs;
use std::io;

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// The caller's score, read before a libcontainer call and written back after it.
pub(crate) struct OomScoreAdj(String);

impl OomScoreAdj {
    pub fn save() -> io::Result<OomScoreAdj> {
        fs::read_to_string(OOM_SCORE_ADJ).map(OomScoreAdj)
    }

    /// Writes the saved score back if libcontainer changed it. Children cloned meanwhile keep
    /// the container's score.
    pub fn restore(self) -> io::Result<()> {
        if fs::read_to_string(OOM_SCORE_ADJ)? != self.0 {
            fs::write(OOM_SCORE_ADJ, self.0.trim())?;
        }
        Ok(())
    }
}
