//! The fake model in a child process (`codex-pool mock-model`), and the process settings that
//! point codex at it.

use crate::error::{expect_some, read_pem, BenchError, IoContext};
use codex_pool_process::{ModelProvider, ProcessConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A process configuration pointed at a Responses-compatible server, with its folders under
/// `scratch`: `codex-home/`, `empty/` (the working directory) and `home/`.
pub fn codex_process_config(
    bin: PathBuf,
    scratch: &std::path::Path,
    base_url: &str,
    model: &str,
    codex_log: &str,
) -> ProcessConfig {
    let mut provider = ModelProvider::new("codex-pool", base_url);
    provider.request_max_retries = Some(0);
    provider.stream_max_retries = Some(0);
    let mut config = ProcessConfig::new(bin, scratch.join("codex-home"), scratch.join("empty"))
        .with_provider(&provider)
        .with_override("model", codex_pool_process::toml_string(model));
    config.codex_log = codex_log.to_owned();
    config
}

/// The fake model in a child process (`codex-pool mock-model`), so that its CPU time is not
/// counted as the pool's in benchmarks.
pub struct MockChild {
    child: tokio::process::Child,
    addr: String,
    /// The base URL to give codex.
    pub base_url: String,
    /// With HTTPS: a client that trusts the fake model's CA.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl MockChild {
    /// Starts `EXE mock-model` (`exe`: the `codex-pool` executable) on a free loopback port; with
    /// `ca_out`, over HTTPS, its CA written there.
    pub async fn spawn(exe: &Path, deltas: usize, ca_out: Option<&Path>) -> Result<Self, BenchError> {
        let mut command = tokio::process::Command::new(exe);
        command.args(["mock-model", "--listen", "127.0.0.1:0", "--deltas", &deltas.to_string()]);
        if let Some(ca) = ca_out {
            command.arg("--tls").arg("--ca-out").arg(ca);
        }
        Self::start(command, ca_out).await
    }

    /// Starts `EXE mock-model` over plain HTTP reporting input tokens as a real model would
    /// (`--tokens-from-size`, so codex's compaction threshold bites), every request body written
    /// to `log_dir/NNNNNN.json`.
    pub async fn spawn_logging(exe: &Path, deltas: usize, log_dir: &Path) -> Result<Self, BenchError> {
        let mut command = tokio::process::Command::new(exe);
        command.args(["mock-model", "--listen", "127.0.0.1:0", "--deltas", &deltas.to_string()]);
        command.arg("--tokens-from-size").arg("--log-dir").arg(log_dir);
        Self::start(command, None).await
    }

    async fn start(mut command: tokio::process::Command, ca_out: Option<&Path>) -> Result<Self, BenchError> {
        use tokio::io::AsyncBufReadExt;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .doing("starting the fake model (codex-pool mock-model)")?;
        let stdout = expect_some(child.stdout.take(), "the fake model has no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let listening = async {
            loop {
                match lines.next_line().await? {
                    Some(line) if line.starts_with("mock model listening at ") => return Ok(Some(line)),
                    Some(_) => continue,
                    None => return Ok::<_, std::io::Error>(None),
                }
            }
        };
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), listening)
            .await
            .map_err(|_| BenchError::Child("the fake model did not start in 10 s".to_owned()))?
            .doing("reading the fake model's output")?;
        let line = expect_some(line, "the fake model exited at start")?;
        let base_url = line.rsplit(' ').next().unwrap_or_default().to_owned();
        let addr = base_url.split_once("://").map_or("", |(_, a)| a).trim_end_matches("/v1").to_owned();
        let tls = ca_out.map(trusting).transpose()?;
        Ok(Self { child, addr, base_url, tls })
    }

    /// `(requests, request body bytes)` received so far.
    pub async fn stats(&self) -> Result<(u64, u64), BenchError> {
        use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
        async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut conn: S, host: &str) -> std::io::Result<String> {
            conn.write_all(format!("GET /stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
                .await?;
            let mut response = Vec::new();
            // A TLS peer may close without close_notify once it has answered: what was read counts.
            match conn.read_to_end(&mut response).await {
                Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => Err(e),
                _ => Ok(String::from_utf8_lossy(&response).into_owned()),
            }
        }
        let what = "asking the fake model for its stats";
        let conn = tokio::net::TcpStream::connect(&self.addr).await.doing(what)?;
        let response = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::from(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST));
                get(tls.connect(name, conn).await.doing(what)?, &self.addr).await.doing(what)?
            }
            None => get(conn, &self.addr).await.doing(what)?,
        };
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body.trim())?;
        Ok((v["requests"].as_u64().unwrap_or(0), v["body_bytes"].as_u64().unwrap_or(0)))
    }

    /// Stops the fake model.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A TLS client that trusts the certificates in `ca`.
fn trusting(ca: &Path) -> Result<tokio_rustls::TlsConnector, BenchError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = read_pem(ca)?;
    roots.add_parsable_certificates(certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
