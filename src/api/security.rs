//! TLS and authentication for the three edges.
//!
//! * TLS (rustls, ring provider): one certificate and key for gRPC, HTTP and
//!   RESP, each with its own ALPN (`h2` for gRPC, `http/1.1` for HTTP);
//!   optionally client certificates, verified against a CA
//!   (`--tls-client-ca`). Handshakes run in each connection's own task,
//!   bounded by the request timeout, so a client that never finishes one
//!   holds up nobody.
//! * Authentication: a bearer token for gRPC (`authorization` metadata) and
//!   HTTP (`Authorization` header), a password for RESP (`AUTH`). Secrets
//!   come from files (never from the command line, where `ps` shows them),
//!   are compared in constant time, and print as `<redacted>`.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// A secret (token or password): compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// Reads a secret from a file (trailing newline removed; must not be
    /// empty).
    pub fn from_file(path: &Path, what: &str) -> Result<Secret> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read secret", path, e))?;
        let trimmed = bytes.trim_ascii_end();
        if trimmed.is_empty() {
            return Err(Error::Config(format!(
                "{what} file {} is empty",
                path.display()
            )));
        }
        Ok(Secret(trimmed.into()))
    }

    /// A secret from bytes (tests).
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(bytes.into())
    }

    /// Whether `given` is this secret, in time independent of where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let diff = self.0.len() ^ given.len();
        let mut acc = u8::from(diff != 0);
        for (i, &b) in self.0.iter().enumerate() {
            acc |= b ^ given.get(i).copied().unwrap_or(!b);
        }
        acc == 0
    }

    /// Whether an `authorization` value is `Bearer <this secret>`.
    pub fn matches_bearer(&self, header: Option<&[u8]>) -> bool {
        header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .is_some_and(|t| self.matches(t.trim_ascii()))
    }
}

/// Where the TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// Private key (PEM).
    pub key: std::path::PathBuf,
    /// CA that client certificates must chain to; None: no client certs.
    pub client_ca: Option<std::path::PathBuf>,
}

/// The TLS acceptors of the three protocols.
#[derive(Clone)]
pub struct Tls {
    /// gRPC (ALPN h2).
    pub grpc: TlsAcceptor,
    /// HTTP (ALPN http/1.1).
    pub http: TlsAcceptor,
    /// RESP (no ALPN).
    pub resp: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads certificate, key and (optionally) the client CA.
    pub fn load(files: &TlsFiles) -> Result<Tls> {
        let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            Error::Config(format!("TLS {what} {}: {e}", path.display()))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .and_then(|it| it.collect())
            .map_err(|e| bad("certificate", &files.cert, &e))?;
        if certs.is_empty() {
            return Err(bad(
                "certificate",
                &files.cert,
                &"no certificate in the file",
            ));
        }
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("key", &files.key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad("client CA", ca, &e))? {
                    let c = c.map_err(|e| bad("client CA", ca, &e))?;
                    roots.add(c).map_err(|e| bad("client CA", ca, &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| bad("client CA", ca, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate and key", &files.cert, &e))?;
        let with_alpn = |alpn: &[&[u8]]| {
            let mut c = config.clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(c))
        };
        Ok(Tls {
            grpc: with_alpn(&[b"h2"]),
            http: with_alpn(&[b"http/1.1"]),
            resp: with_alpn(&[]),
        })
    }
}

/// A connection's byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A boxed connection stream.
pub type BoxStream = Pin<Box<dyn Stream>>;

/// Completes the TLS handshake if `tls` is set (within `timeout`); the
/// plain stream otherwise.
pub async fn accept(
    stream: tokio::net::TcpStream,
    tls: Option<&TlsAcceptor>,
    timeout: Duration,
) -> io::Result<BoxStream> {
    match tls {
        None => Ok(Box::pin(stream)),
        Some(acceptor) => {
            let s = tokio::time::timeout(timeout, acceptor.accept(stream))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(Box::pin(s))
        }
    }
}

/// The gRPC authentication check (a tonic interceptor): with a token set,
/// every call must carry `authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct GrpcAuth(pub Option<Secret>);

impl tonic::service::Interceptor for GrpcAuth {
    fn call(
        &mut self,
        req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        match &self.0 {
            None => Ok(req),
            Some(token) => {
                let given = req.metadata().get("authorization").map(|v| v.as_bytes());
                if token.matches_bearer(given) {
                    Ok(req)
                } else {
                    Err(tonic::Status::unauthenticated(
                        "missing or wrong token: send metadata 'authorization: Bearer <token>'",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly_and_never_print() {
        let s = Secret::new(b"s3cret");
        assert!(s.matches(b"s3cret"));
        for other in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"x3cret"] {
            assert!(!s.matches(other), "{other:?}");
        }
        assert!(s.matches_bearer(Some(b"Bearer s3cret")));
        assert!(!s.matches_bearer(Some(b"Basic s3cret")));
        assert!(!s.matches_bearer(None));
        assert_eq!(format!("{s:?}"), "<redacted>");
    }

    #[test]
    fn secret_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "abc\n").unwrap();
        assert!(Secret::from_file(&p, "token").unwrap().matches(b"abc"));
        std::fs::write(&p, "\n").unwrap();
        assert!(Secret::from_file(&p, "token").is_err());
    }
}
