//! A PostgreSQL cluster for one test binary: scripts/pg.sh's in a temporary directory of its own,
//! unless OTELSTORE_TEST_PG_DSN names a database to use. Shared by the PostgreSQL tests of the
//! core (rust/core/tests/postgres.rs) and of the query crate (by `#[path]`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Stopped and its directory removed when dropped (also after a failed assertion).
pub struct Cluster {
    /// The cluster's directory; None for a database named by OTELSTORE_TEST_PG_DSN.
    pub dir: Option<PathBuf>,
    pub dsn: String,
}

impl Cluster {
    pub fn start() -> Cluster {
        if let Ok(dsn) = std::env::var("OTELSTORE_TEST_PG_DSN") {
            return Cluster { dir: None, dsn };
        }
        let dir = std::env::temp_dir().join(format!(
            "{}-test-{}",
            env!("CARGO_PKG_NAME"),
            std::process::id()
        ));
        let output = pg_sh("start", &dir).output().expect("run scripts/pg.sh");
        assert!(
            output.status.success(),
            "scripts/pg.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let dsn = String::from_utf8(output.stdout)
            .expect("UTF-8")
            .lines()
            .last()
            .expect("a DSN line")
            .trim()
            .to_owned();
        Cluster {
            dir: Some(dir),
            dsn,
        }
    }

    /// Stops the cluster (fast shutdown); false when it is not this test's to stop.
    pub fn stop(&self) -> bool {
        self.dir
            .as_ref()
            .is_some_and(|dir| pg_sh("stop", dir).status().is_ok_and(|s| s.success()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            self.stop();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pg_sh(command: &str, dir: &Path) -> Command {
    let mut pg_sh = Command::new(repo_root().join("scripts/pg.sh"));
    pg_sh.arg(command).arg(dir);
    pg_sh
}
