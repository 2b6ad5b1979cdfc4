//! The readiness pipe between criusd and a starting shim.
//!
//! criusd passes the write end of a pipe as `--ready-fd N` and reads the read
//! end to EOF. The shim writes exactly [`READY`] once its socket serves, or a
//! UTF-8 error message (never starting with NUL) when start-up failed. EOF
//! with nothing read means the shim died before it could say either.

/// The one byte a shim writes when its socket serves.
pub const READY: u8 = 0;

/// What a shim reported on its readiness pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Failed(String),
    /// EOF without a report: the shim died during start-up.
    Died,
}

/// Interprets everything read from the readiness pipe up to EOF.
pub fn parse(report: &[u8]) -> Readiness {
    match report {
        [] => Readiness::Died,
        [READY] => Readiness::Ready,
        message => Readiness::Failed(String::from_utf8_lossy(message).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_report() {
        assert_eq!(parse(&[]), Readiness::Died);
        assert_eq!(parse(&[READY]), Readiness::Ready);
        assert_eq!(
            parse(b"bind /run/x.sock: Address in use"),
            Readiness::Failed("bind /run/x.sock: Address in use".into())
        );
    }
}
