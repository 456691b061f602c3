//! `attach`'s way into a running container's stdin: the supervisor of a container created with
//! `-i` listens on `<runroot>/containers/<id>/attach.sock` (mode 0600, root's) and copies what
//! each client sends into the container's stdin (pipe or pty). Output reaches attached clients
//! through the container's log, which the supervisor writes anyway.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The socket of a container's run dir.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("attach.sock")
}

/// Run `f` with a short name for `path` (`/proc/self/fd/<dir>/<name>`): socket addresses are
/// limited to 107 bytes, which a long `--runroot` plus a 64-hex id exceeds.
fn short_path<T>(path: &Path, f: impl FnOnce(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    let d = std::fs::File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd())).join(name);
    f(&short)
}

/// Serve the container's stdin on `sock` from a thread, for the supervisor's lifetime. One
/// client at a time writes; a client leaving does not close the container's stdin.
pub fn serve_stdin(sock: PathBuf, target: OwnedFd) {
    let _ = std::fs::remove_file(&sock);
    let Ok(listener) = short_path(&sock, |p| UnixListener::bind(p)) else {
        std::mem::forget(target);
        return;
    };
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    let _ = std::thread::Builder::new()
        .name("attach-stdin".to_string())
        .spawn(move || {
            let mut out = File::from(target);
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let mut buf = [0u8; 8192];
                loop {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
}

/// Connect to a running container's stdin (`None` when it was not created with `-i`).
pub fn connect_stdin(run_dir: &Path) -> Option<UnixStream> {
    short_path(&socket_path(run_dir), |p| UnixStream::connect(p)).ok()
}
