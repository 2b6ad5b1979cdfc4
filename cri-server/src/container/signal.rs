//! Stop signals (KEP-4960): which signal StopContainer sends first, and how
//! CRI's `Signal` enum and an image's STOPSIGNAL map to signal numbers.

use crius_proto::cri::Signal;

use crate::error::CriError;

/// The real-time signals as user space numbers them: glibc keeps the
/// kernel's 32 and 33 for itself, so SIGRTMIN is 34 and SIGRTMAX 64. These
/// are what kubelet's names (`SIGRTMIN+1`, `SIGRTMAX-14`) mean to
/// containerd, which parses them with moby/sys/signal (signal_linux.go).
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// The Linux signal number of CRI `signal` (api.proto's enum of
/// k8s.io/cri-api v0.37): `None` for SIGNAL_RUNTIME_DEFAULT. Pure.
fn number(signal: Signal) -> Option<i32> {
    let n = match signal {
        Signal::RuntimeDefault => return None,
        Signal::Sigabrt | Signal::Sigiot => libc::SIGABRT,
        Signal::Sigalrm => libc::SIGALRM,
        Signal::Sigbus => libc::SIGBUS,
        Signal::Sigchld | Signal::Sigcld => libc::SIGCHLD,
        Signal::Sigcont => libc::SIGCONT,
        Signal::Sigfpe => libc::SIGFPE,
        Signal::Sighup => libc::SIGHUP,
        Signal::Sigill => libc::SIGILL,
        Signal::Sigint => libc::SIGINT,
        Signal::Sigio | Signal::Sigpoll => libc::SIGIO,
        Signal::Sigkill => libc::SIGKILL,
        Signal::Sigpipe => libc::SIGPIPE,
        Signal::Sigprof => libc::SIGPROF,
        Signal::Sigpwr => libc::SIGPWR,
        Signal::Sigquit => libc::SIGQUIT,
        Signal::Sigsegv => libc::SIGSEGV,
        Signal::Sigstkflt => libc::SIGSTKFLT,
        Signal::Sigstop => libc::SIGSTOP,
        Signal::Sigsys => libc::SIGSYS,
        Signal::Sigterm => libc::SIGTERM,
        Signal::Sigtrap => libc::SIGTRAP,
        Signal::Sigtstp => libc::SIGTSTP,
        Signal::Sigttin => libc::SIGTTIN,
        Signal::Sigttou => libc::SIGTTOU,
        Signal::Sigurg => libc::SIGURG,
        Signal::Sigusr1 => libc::SIGUSR1,
        Signal::Sigusr2 => libc::SIGUSR2,
        Signal::Sigvtalrm => libc::SIGVTALRM,
        Signal::Sigwinch => libc::SIGWINCH,
        Signal::Sigxcpu => libc::SIGXCPU,
        Signal::Sigxfsz => libc::SIGXFSZ,
        // SIGRTMIN through SIGRTMIN+15, then SIGRTMAX-14 through SIGRTMAX:
        // consecutive in the enum as in the numbers.
        rt => SIGRTMIN + (rt as i32 - Signal::Sigrtmin as i32),
    };
    Some(n)
}

/// The CRI `Signal` that names signal number `n`, the first in the enum's
/// order where two names share a number (SIGABRT, not SIGIOT; SIGCHLD, not
/// SIGCLD; SIGIO, not SIGPOLL); `None` for a number it has no name for.
/// Pure.
fn named(n: i32) -> Option<Signal> {
    (1..=Signal::Sigrtmax as i32)
        .filter_map(|v| Signal::try_from(v).ok())
        .find(|&s| number(s) == Some(n))
}

/// The signal StopContainer sends first, in KEP-4960's order: the config's
/// `stop_signal` (a CRI `Signal` value), else the image's STOPSIGNAL, else
/// SIGTERM; as ContainerStatus reports it. RuntimeDefault when the image's
/// signal is a number CRI has no name for: StopContainer then sends that
/// number ([`image_signal`]). Errors: InvalidArgument naming
/// `config.stop_signal` when `config_value` is no `Signal`. Pure.
pub fn stop_signal(config_value: i32, image_stop_signal: &str) -> Result<Signal, CriError> {
    let signal = Signal::try_from(config_value).map_err(|_| {
        CriError::invalid(
            "config.stop_signal",
            format!("{config_value} is not a CRI Signal value"),
        )
    })?;
    if signal != Signal::RuntimeDefault {
        return Ok(signal);
    }
    Ok(named(image_signal(image_stop_signal)).unwrap_or(Signal::RuntimeDefault))
}

/// The number StopContainer sends for a container whose resolved
/// [`stop_signal`] is `resolved` and whose image says `image_stop_signal`.
/// Pure.
pub fn stop_number(resolved: i32, image_stop_signal: &str) -> i32 {
    Signal::try_from(resolved)
        .ok()
        .and_then(number)
        .unwrap_or_else(|| image_signal(image_stop_signal))
}

/// The number of an image's STOPSIGNAL as the OCI image config writes it:
/// a name with or without `SIG` (`SIGQUIT`, `QUIT`, `SIGRTMIN+3`,
/// `RTMAX-1`) or a number; the names are those of CRI's `Signal`, which
/// has every Linux signal. Empty or unknown: SIGTERM, as Docker and
/// containerd default. Pure.
pub fn image_signal(name: &str) -> i32 {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    let bare = name.strip_prefix("SIG").unwrap_or(name);
    let realtime = |base: &str, from: i32, sign: i32| {
        let rest = bare.strip_prefix(base)?;
        if rest.is_empty() {
            return Some(from);
        }
        let offset: i32 = rest
            .strip_prefix(if sign > 0 { '+' } else { '-' })?
            .parse()
            .ok()?;
        let n = from + sign * offset;
        (SIGRTMIN..=SIGRTMAX).contains(&n).then_some(n)
    };
    realtime("RTMIN", SIGRTMIN, 1)
        .or_else(|| realtime("RTMAX", SIGRTMAX, -1))
        .or_else(|| Signal::from_str_name(&format!("SIGNAL_SIG{bare}")).and_then(number))
        .unwrap_or(libc::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cri_signal_has_its_linux_number() {
        let expect = [
            (Signal::Sigabrt, 6),
            (Signal::Sigalrm, 14),
            (Signal::Sigbus, 7),
            (Signal::Sigchld, 17),
            (Signal::Sigcld, 17),
            (Signal::Sigcont, 18),
            (Signal::Sigfpe, 8),
            (Signal::Sighup, 1),
            (Signal::Sigill, 4),
            (Signal::Sigint, 2),
            (Signal::Sigio, 29),
            (Signal::Sigiot, 6),
            (Signal::Sigkill, 9),
            (Signal::Sigpipe, 13),
            (Signal::Sigpoll, 29),
            (Signal::Sigprof, 27),
            (Signal::Sigpwr, 30),
            (Signal::Sigquit, 3),
            (Signal::Sigsegv, 11),
            (Signal::Sigstkflt, 16),
            (Signal::Sigstop, 19),
            (Signal::Sigsys, 31),
            (Signal::Sigterm, 15),
            (Signal::Sigtrap, 5),
            (Signal::Sigtstp, 20),
            (Signal::Sigttin, 21),
            (Signal::Sigttou, 22),
            (Signal::Sigurg, 23),
            (Signal::Sigusr1, 10),
            (Signal::Sigusr2, 12),
            (Signal::Sigvtalrm, 26),
            (Signal::Sigwinch, 28),
            (Signal::Sigxcpu, 24),
            (Signal::Sigxfsz, 25),
            (Signal::Sigrtmin, 34),
            (Signal::Sigrtminplus1, 35),
            (Signal::Sigrtminplus15, 49),
            (Signal::Sigrtmaxminus14, 50),
            (Signal::Sigrtmaxminus1, 63),
            (Signal::Sigrtmax, 64),
        ];
        for (signal, n) in expect {
            assert_eq!(number(signal), Some(n), "{signal:?}");
        }
        assert_eq!(number(Signal::RuntimeDefault), None);
        // Every value of the enum has a number.
        for v in 1..=Signal::Sigrtmax as i32 {
            assert!(number(Signal::try_from(v).unwrap()).is_some(), "{v}");
        }
    }

    #[test]
    fn the_config_signal_comes_before_the_images_and_sigterm() {
        let usr1 = Signal::Sigusr1 as i32;
        assert_eq!(stop_signal(usr1, "SIGQUIT").unwrap(), Signal::Sigusr1);
        assert_eq!(stop_signal(0, "SIGQUIT").unwrap(), Signal::Sigquit);
        assert_eq!(stop_signal(0, "").unwrap(), Signal::Sigterm);
        assert_eq!(stop_signal(0, "RTMIN+2").unwrap(), Signal::Sigrtminplus2);
        // Shared numbers are named by the first name.
        assert_eq!(stop_signal(0, "SIGIOT").unwrap(), Signal::Sigabrt);
        // A number CRI has no name for is sent as is, reported as the default.
        assert_eq!(stop_signal(0, "33").unwrap(), Signal::RuntimeDefault);
        assert_eq!(stop_number(Signal::RuntimeDefault as i32, "33"), 33);
        assert_eq!(stop_number(usr1, "SIGQUIT"), libc::SIGUSR1);
        assert_eq!(
            stop_number(Signal::Sigquit as i32, "SIGQUIT"),
            libc::SIGQUIT
        );
    }

    #[test]
    fn an_unknown_config_signal_is_invalid_naming_the_field() {
        assert!(stop_signal(-1, "").is_err());
        let err = stop_signal(99, "").unwrap_err();
        assert!(
            matches!(&err, CriError::InvalidArgument { field: "config.stop_signal", message } if message.contains("99")),
            "{err:?}"
        );
    }

    #[test]
    fn image_stop_signals_by_name_or_number() {
        assert_eq!(image_signal(""), libc::SIGTERM);
        assert_eq!(image_signal("SIGQUIT"), libc::SIGQUIT);
        assert_eq!(image_signal("WINCH"), libc::SIGWINCH);
        assert_eq!(image_signal("9"), 9);
        assert_eq!(image_signal("SIGRTMIN"), 34);
        assert_eq!(image_signal("SIGRTMIN+3"), 37);
        assert_eq!(image_signal("RTMAX-1"), 63);
        assert_eq!(image_signal("SIGRTMAX"), 64);
        assert_eq!(image_signal("SIGRTMIN+40"), libc::SIGTERM);
        assert_eq!(image_signal("SIGCLD"), libc::SIGCHLD);
        assert_eq!(image_signal("SIGNOPE"), libc::SIGTERM);
        assert_eq!(image_signal("RUNTIME_DEFAULT"), libc::SIGTERM);
    }
}
