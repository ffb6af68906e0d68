//! Starts tests/clickhouse/chdb_front.py (ClickHouse's HTTP interface over chdb, ClickHouse
//! embedded) for the Rust integration tests. Shared by the crates' tests, which include it with
//! `#[path = ".../rust/test-support/chdb_front.rs"] mod chdb_front;` (the crates sit at
//! rust/<name>, so the repository root is two levels above their manifests).
//!
//! The front needs a Python with chdb: the interpreter in OTELSTORE_TEST_CHDB_PYTHON, or the
//! repository's .venv, or /work/main/.venv; without one a test says so and passes, except under
//! CI, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python that can import chdb, or None.
fn python() -> Option<PathBuf> {
    let candidates = std::env::var_os("OTELSTORE_TEST_CHDB_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            repo_root().join(".venv/bin/python"),
            PathBuf::from("/work/main/.venv/bin/python"),
        ]);
    candidates.filter(|p| p.exists()).find(|p| {
        Command::new(p)
            .args(["-c", "import chdb, lz4, clickhouse_cityhash"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The chdb front on a free port, killed when dropped.
pub struct Front {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Front {
    /// Starts the front, or returns None (after saying why) when there is no Python with chdb.
    pub fn start() -> Option<Front> {
        Front::start_with(&[])
    }

    /// [`Front::start`] with more arguments for chdb_front.py (`--password`, `--tls-cert` and
    /// `--tls-key`: then the URL is https).
    pub fn start_with(arguments: &[&str]) -> Option<Front> {
        let Some(python) = python() else {
            // CI has the venv (make test builds it first); only a bare `cargo test` may lack it.
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have a Python with chdb (make venv)"
            );
            eprintln!("SKIPPED: no Python with chdb (set OTELSTORE_TEST_CHDB_PYTHON)");
            return None;
        };
        // One directory per front: the process id and a count of the fronts it started.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "otelstore-chdb-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/clickhouse/chdb_front.py"))
            .args(["--port", "0", "--data"])
            .arg(&dir)
            .args(arguments)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start chdb_front.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("chdb_front.py printed {line:?}, not a port"));
        let scheme = if arguments.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        Some(Front {
            child,
            dir,
            url: format!("{scheme}://127.0.0.1:{port}"),
        })
    }

    /// `http://127.0.0.1:PORT` (https with `--tls-cert`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
