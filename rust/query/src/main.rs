//! The `otelstore-query` binary: reads its configuration, opens the store and serves the APIs
//! until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use otelstore_query::config::{Command, Config, ConfigError, USAGE};
use otelstore_query::store::{self, StoreError};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("otelstore-query: {error}");
            match error {
                Error::Config(ConfigError::Usage(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run() -> Result<(), Error> {
    let config = match Config::from_args(std::env::args().skip(1))? {
        Command::Serve(config) => config,
        Command::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Command::Version => {
            println!("otelstore-query {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
    };
    tracing::info!(backend = ?config.backend, "opening the store");
    let store = store::open(&config.backend, config.request_timeout).await?;
    let listen = |source| Error::Listen {
        address: config.listen,
        source,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(listen)?;
    let address = listener.local_addr().map_err(listen)?;
    println!("otelstore-query listening on http://{address}");
    tracing::info!(%address, "serving the Jaeger API");
    axum::serve(listener, otelstore_query::api::router(store, &config))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(Error::Serve)?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; requests in flight then finish before the server stops.
async fn shutdown() {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!("cannot watch for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot watch for SIGINT: {error}");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        () = interrupt => tracing::info!("SIGINT: shutting down"),
    }
}
