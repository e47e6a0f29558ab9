//! A real OpenSSH server (Debian's `openssh-server`, which `.ci/run` installs) on a free
//! loopback port, with a host key, a client key and a password user of its own.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Running;

/// The system user the tunnel logs in as, and its password.
pub const USER: &str = "quarry_tunnel";
pub const PASSWORD: &str = "tunnel-Password-1";

/// An `sshd` process and the files a client needs.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    process: Option<Running>,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (install openssh-server: see .ci/run): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The password user exists, once per test run.
fn ensure_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let exists = Command::new("id")
            .arg(USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            run("useradd", &["--create-home", "--shell", "/bin/sh", USER]);
        }
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd runs");
        use std::io::Write;
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{USER}:{PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success());
        // The privilege separation directory, which a fresh /run may lack.
        std::fs::create_dir_all("/run/sshd").unwrap();
    });
}

/// A new ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            path.to_str().unwrap(),
        ],
    );
}

impl Sshd {
    /// Starts a server that accepts the client key and the user's password.
    pub fn start() -> Sshd {
        ensure_user();
        let dir = tempfile::tempdir().unwrap();
        // sshd reads authorized_keys as the user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(dir.path().join("client_key.pub"), &authorized).unwrap();
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AllowTcpForwarding yes\nPermitRootLogin no\nAllowUsers {USER}\nLogLevel DEBUG1\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        let known = format!(
            "[127.0.0.1]:{port} {}",
            std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap()
        );
        std::fs::write(dir.path().join("known_hosts"), known).unwrap();
        let mut sshd = Sshd {
            dir,
            port,
            process: None,
        };
        sshd.run();
        sshd
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sshd.log"))
            .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("/usr/sbin/sshd runs (install openssh-server: see .ci/run)");
        self.process = Some(Running(child));
        // Ready once it accepts a connection and sends its banner.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Read;
                let mut banner = [0u8; 4];
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with its sessions (each a process of its own): the tunnels and the
    /// connections forwarded through them drop.
    pub fn stop(&mut self) {
        if let Some(running) = self.process.take() {
            for pid in descendants(running.0.id()) {
                // SAFETY: kill(2) with a pid read from /proc; a stale pid fails harmlessly.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }

    /// Starts it again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// What the server has logged (at DEBUG1: each forwarded connection, with its target).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The private key the server accepts.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// A known_hosts file that records the server's real host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// A scratch directory of the server's, for other keys and files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `ssh` config of a key login.
    pub fn key_config(&self) -> serde_json::Value {
        serde_json::json!({
            "host": "127.0.0.1",
            "port": self.port,
            "user": USER,
            "auth": "key",
            "key_path": self.client_key(),
            "known_hosts": self.known_hosts(),
        })
    }
}

/// The processes descended from `root`, read from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}
