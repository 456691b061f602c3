//! `--storage-opt KEY=VALUE`: storage driver options, spelled as containers-storage spells them.

use std::path::PathBuf;

use strata_runtime::driver::DriverKind;

/// One `--storage-opt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOpt {
    /// `mount_program=PATH` (or `overlay.mount_program=PATH`): the fuse-overlayfs driver runs PATH.
    MountProgram(PathBuf),
}

/// Parse `KEY=VALUE`; unknown keys are refused.
pub fn parse(s: &str) -> Result<StorageOpt, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("storage option {s:?} is not KEY=VALUE"))?;
    match key {
        "mount_program" | "overlay.mount_program" if !value.is_empty() => {
            Ok(StorageOpt::MountProgram(PathBuf::from(value)))
        }
        "mount_program" | "overlay.mount_program" => Err("mount_program needs a path".to_string()),
        other => Err(format!(
            "unknown storage option {other:?} (known: mount_program)"
        )),
    }
}

/// For `info`: the driver's name, and when it runs a mount program, that program (resolved on
/// `PATH` when given by name) and the first line of its `--version` ("unknown" if it prints none).
pub fn describe(kind: &DriverKind) -> (String, Option<(String, String)>) {
    let Some(d) = kind.mount_program() else {
        return (kind.to_string(), None);
    };
    let program = d.program();
    let shown = if program.components().count() == 1 {
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(program))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| program.to_path_buf())
    } else {
        program.to_path_buf()
    };
    let version = d.version().unwrap_or_else(|| "unknown".to_string());
    (
        kind.name().to_string(),
        Some((shown.display().to_string(), version)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_only() {
        assert_eq!(
            parse("mount_program=/usr/bin/x"),
            Ok(StorageOpt::MountProgram("/usr/bin/x".into()))
        );
        assert_eq!(
            parse("overlay.mount_program=/y"),
            Ok(StorageOpt::MountProgram("/y".into()))
        );
        assert!(parse("size=10G")
            .unwrap_err()
            .contains("unknown storage option"));
        assert!(parse("mount_program").is_err());
        assert!(parse("mount_program=").is_err());
    }
}
