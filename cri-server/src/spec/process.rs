//! The container's command line, environment and working directory (Docker's
//! and Kubernetes' rules for combining the CRI config with the image config),
//! and the process of an exec into a running container.

use std::path::{Path, PathBuf};

use crius_proto::cri::ContainerConfig;
use oci_spec::runtime::{Box as ConsoleSize, BoxBuilder, Process};

use super::{ImageConfigView, SpecError};

/// The PATH a process gets when neither the image nor the request sets one
/// (containerd's and runc's default).
pub(super) const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CRI `command` replaces the image's Entrypoint, CRI `args` its Cmd; a command
/// given without args drops the image's Cmd too (it belonged to the old
/// entrypoint).
pub(super) fn args(
    config: &ContainerConfig,
    image: &ImageConfigView,
) -> Result<Vec<String>, SpecError> {
    let (command, args) = if config.command.is_empty() {
        // Docker treats `ENTRYPOINT [""]` as "no entrypoint".
        let entrypoint = if image.entrypoint == [""] {
            &[][..]
        } else {
            &image.entrypoint[..]
        };
        let args = if config.args.is_empty() {
            &image.cmd[..]
        } else {
            &config.args[..]
        };
        (entrypoint, args)
    } else {
        (&config.command[..], &config.args[..])
    };
    let all: Vec<String> = command.iter().chain(args).cloned().collect();
    if all.is_empty() {
        return Err(SpecError::invalid(
            "config.command",
            "no command given and the image has no Entrypoint or Cmd",
        ));
    }
    Ok(all)
}

/// Image env first, then the request's, each replacing an earlier value of the
/// same name; PATH, TERM (with a tty) and HOSTNAME are defaults they may
/// override. HOME, when still unset, is the user's home (as runc sets it).
pub(super) fn env(
    config: &ContainerConfig,
    image: &ImageConfigView,
    hostname: &str,
    home: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    if config.tty {
        set_env(&mut env, "TERM=xterm".to_string());
    }
    set_env(&mut env, format!("HOSTNAME={hostname}"));
    for e in &image.env {
        set_env(&mut env, e.clone());
    }
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(SpecError::invalid(
                "config.envs",
                format!("envs[{i}].key {:?} is not a variable name", kv.key),
            ));
        }
        // CRI carries values as bytes; an OCI spec's env is UTF-8 strings.
        let Ok(value) = std::str::from_utf8(&kv.value) else {
            return Err(SpecError::invalid(
                "config.envs",
                format!("envs[{i}] ({}) has a value that is not UTF-8", kv.key),
            ));
        };
        set_env(&mut env, format!("{}={value}", kv.key));
    }
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    Ok(env)
}

/// The window size a `tty` container's pty starts with: 24 rows × 80 columns,
/// a VT100's, which is also what busybox and terminfo fall back to on a pty
/// that reports 0×0. The CRI gives no size at create (containerd and CRI-O
/// leave the kernel's 0×0, which some programs cannot lay out in); an attach
/// resizes the pty to the client's terminal.
pub(super) fn console_size(tty: bool) -> Result<Option<ConsoleSize>, SpecError> {
    if !tty {
        return Ok(None);
    }
    Ok(Some(
        BoxBuilder::default().height(24u64).width(80u64).build()?,
    ))
}

/// The request's working_dir, else the image's (relative to /), else /.
pub(super) fn cwd(config: &ContainerConfig, image: &ImageConfigView) -> Result<PathBuf, SpecError> {
    if !config.working_dir.is_empty() {
        let dir = Path::new(&config.working_dir);
        if !dir.is_absolute() {
            return Err(SpecError::invalid(
                "config.working_dir",
                format!("{:?} is not an absolute path", config.working_dir),
            ));
        }
        return Ok(dir.to_path_buf());
    }
    if !image.working_dir.is_empty() {
        return Ok(Path::new("/").join(&image.working_dir));
    }
    Ok(PathBuf::from("/"))
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Replaces the variable of the same name in place, or appends.
fn set_env(env: &mut Vec<String>, entry: String) {
    match env.iter_mut().find(|e| env_key(e) == env_key(&entry)) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// The process of an ExecSync/Exec inside a running container: `cmd` run with
/// the container's own user, env, cwd, capabilities and no_new_privs; with a
/// tty it gets a terminal and TERM=xterm (as containerd does), sized
/// `size` (columns, rows) when the client's terminal size is known.
pub fn exec_process(
    container_process: &Process,
    cmd: &[String],
    tty: bool,
    size: Option<(u16, u16)>,
) -> Result<Process, SpecError> {
    if cmd.is_empty() {
        return Err(SpecError::invalid("cmd", "must not be empty"));
    }
    let mut process = container_process.clone();
    process.set_args(Some(cmd.to_vec()));
    process.set_command_line(None);
    process.set_terminal(Some(tty));
    let size = match size.filter(|_| tty) {
        Some((width, height)) => Some(
            BoxBuilder::default()
                .width(u64::from(width))
                .height(u64::from(height))
                .build()?,
        ),
        None => None,
    };
    process.set_console_size(size);
    if tty {
        let mut env = process.env().clone().unwrap_or_default();
        set_env(&mut env, "TERM=xterm".to_string());
        process.set_env(Some(env));
    }
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::cri::KeyValue;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfigView {
        ImageConfigView {
            entrypoint: strings(entrypoint),
            cmd: strings(cmd),
            ..Default::default()
        }
    }

    fn config(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: strings(command),
            args: strings(args),
            ..Default::default()
        }
    }

    #[test]
    fn args_follow_docker_rules() {
        let img = image(&["/entry"], &["default-arg"]);
        assert_eq!(
            args(&config(&[], &[]), &img).unwrap(),
            ["/entry", "default-arg"]
        );
        assert_eq!(args(&config(&[], &["a"]), &img).unwrap(), ["/entry", "a"]);
        // A command alone drops the image's Cmd.
        assert_eq!(args(&config(&["/bin/sh"], &[]), &img).unwrap(), ["/bin/sh"]);
        assert_eq!(
            args(&config(&["/bin/sh"], &["-c", "x"]), &img).unwrap(),
            ["/bin/sh", "-c", "x"]
        );
        assert_eq!(
            args(&config(&[], &[]), &image(&[""], &["sh"])).unwrap(),
            ["sh"]
        );
        assert_eq!(
            args(&config(&[], &["top"]), &image(&[], &["sh"])).unwrap(),
            ["top"]
        );
    }

    #[test]
    fn no_command_at_all_names_config_command() {
        let err = args(&config(&[], &[]), &image(&[], &[])).unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: "config.command",
                    ..
                }
            ),
            "{err}"
        );
        assert!(args(&config(&[], &[]), &image(&[""], &[])).is_err());
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn env_layers_override_by_key() {
        let img = ImageConfigView {
            env: strings(&["PATH=/image/bin", "A=image", "B=image"]),
            ..Default::default()
        };
        let cfg = ContainerConfig {
            envs: vec![kv("B", "cri"), kv("C", "x=y"), kv("HOSTNAME", "mine")],
            ..Default::default()
        };
        assert_eq!(
            env(&cfg, &img, "pod-host", "/root").unwrap(),
            [
                "PATH=/image/bin",
                "HOSTNAME=mine",
                "A=image",
                "B=cri",
                "C=x=y",
                "HOME=/root"
            ]
        );
    }

    #[test]
    fn env_defaults() {
        let cfg = ContainerConfig {
            tty: true,
            ..Default::default()
        };
        let img = ImageConfigView {
            env: strings(&["HOME=/custom"]),
            ..Default::default()
        };
        assert_eq!(
            env(&cfg, &img, "h", "/root").unwrap(),
            [DEFAULT_PATH_ENV, "TERM=xterm", "HOSTNAME=h", "HOME=/custom"]
        );
    }

    #[test]
    fn a_tty_term_yields_to_the_image_and_the_request() {
        // containerd's WithTTY appends TERM=xterm before WithEnv replaces by name.
        let mut cfg = ContainerConfig {
            tty: true,
            ..Default::default()
        };
        let img = ImageConfigView {
            env: strings(&["TERM=vt100"]),
            ..Default::default()
        };
        assert!(env(&cfg, &img, "h", "/")
            .unwrap()
            .contains(&"TERM=vt100".to_string()));
        cfg.envs.push(kv("TERM", "linux"));
        let got = env(&cfg, &img, "h", "/").unwrap();
        assert_eq!(got.iter().filter(|e| e.starts_with("TERM=")).count(), 1);
        assert!(got.contains(&"TERM=linux".to_string()), "{got:?}");
        // No tty, no TERM.
        cfg.tty = false;
        cfg.envs.clear();
        let got = env(&cfg, &ImageConfigView::default(), "h", "/").unwrap();
        assert!(!got.iter().any(|e| e.starts_with("TERM=")), "{got:?}");
    }

    #[test]
    fn a_tty_starts_at_24_rows_by_80_columns() {
        let size = console_size(true).unwrap().unwrap();
        assert_eq!((size.height(), size.width()), (24, 80));
        assert!(console_size(false).unwrap().is_none());
    }

    #[test]
    fn env_key_must_be_a_name() {
        let cfg = ContainerConfig {
            envs: vec![kv("", "v")],
            ..Default::default()
        };
        let err = env(&cfg, &ImageConfigView::default(), "h", "/").unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: "config.envs",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn env_value_must_be_utf8() {
        let cfg = ContainerConfig {
            envs: vec![KeyValue {
                key: "RAW".into(),
                value: vec![0x66, 0xff],
            }],
            ..Default::default()
        };
        let err = env(&cfg, &ImageConfigView::default(), "h", "/").unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: "config.envs",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("RAW"), "{err}");
    }

    #[test]
    fn cwd_precedence() {
        let img = ImageConfigView {
            working_dir: "/usr/local/apache2".into(),
            ..Default::default()
        };
        let mut cfg = ContainerConfig::default();
        assert_eq!(
            cwd(&cfg, &ImageConfigView::default()).unwrap(),
            Path::new("/")
        );
        assert_eq!(cwd(&cfg, &img).unwrap(), Path::new("/usr/local/apache2"));
        let rel = ImageConfigView {
            working_dir: "app".into(),
            ..Default::default()
        };
        assert_eq!(cwd(&cfg, &rel).unwrap(), Path::new("/app"));
        cfg.working_dir = "/work".into();
        assert_eq!(cwd(&cfg, &img).unwrap(), Path::new("/work"));
        cfg.working_dir = "work".into();
        assert!(matches!(
            cwd(&cfg, &img),
            Err(SpecError::InvalidArgument {
                field: "config.working_dir",
                ..
            })
        ));
    }

    #[test]
    fn exec_keeps_the_container_identity() {
        let mut base = Process::default();
        base.set_args(Some(strings(&["/init"])));
        base.set_env(Some(strings(&["PATH=/bin", "TERM=dumb"])));
        base.set_cwd("/srv".into());
        base.set_no_new_privileges(Some(true));
        let p = exec_process(&base, &strings(&["ls", "-l"]), false, Some((80, 24))).unwrap();
        assert_eq!(p.args().as_deref().unwrap(), ["ls", "-l"]);
        assert_eq!(p.env(), base.env());
        assert_eq!(p.cwd(), base.cwd());
        assert_eq!(p.user(), base.user());
        assert_eq!(p.capabilities(), base.capabilities());
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.terminal(), Some(false));

        assert_eq!(p.console_size(), None, "no terminal, no size");
        let p = exec_process(&base, &strings(&["sh"]), true, None).unwrap();
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.env().as_deref().unwrap(), ["PATH=/bin", "TERM=xterm"]);
        assert_eq!(p.console_size(), None);
        let p = exec_process(&base, &strings(&["sh"]), true, Some((100, 30))).unwrap();
        let size = p.console_size().unwrap();
        assert_eq!((size.width(), size.height()), (100, 30));

        let err = exec_process(&base, &[], false, None).unwrap_err();
        assert!(matches!(
            err,
            SpecError::InvalidArgument { field: "cmd", .. }
        ));
    }
}
