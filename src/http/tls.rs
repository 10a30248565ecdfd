//! HTTPS served directly (`CSS_HTTPS_CERT`, `CSS_HTTPS_KEY`), with rustls:
//! TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 by ALPN. Handshakes run in tasks of
//! their own (at most 10 s each), so a slow client never holds up others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::app::StartupError;
use crate::config::Https;

/// How long a client may take over its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Reads the certificate chain and key; each error says which file and what to do.
pub fn acceptor(https: &Https) -> Result<TlsAcceptor, StartupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = https.cert.display();
    let key_path = https.key.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&https.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            StartupError(format!(
                "CSS_HTTPS_CERT: cannot read a PEM certificate chain from {cert_path} ({e}); point it at the certificate file (leaf first, then intermediates)"
            ))
        })?;
    if certs.is_empty() {
        return Err(StartupError(format!(
            "CSS_HTTPS_CERT: {cert_path} holds no certificate (-----BEGIN CERTIFICATE-----); point it at the certificate file"
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&https.key).map_err(|e| {
        StartupError(format!(
            "CSS_HTTPS_KEY: cannot read a PEM private key from {key_path} ({e}); point it at the certificate's key (PKCS#8, PKCS#1 or SEC1), readable by the service"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            StartupError(format!(
                "CSS_HTTPS_CERT and CSS_HTTPS_KEY do not make a usable pair ({e}); check that the key is the certificate's"
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// TLS connections on a TCP listener, handshakes done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            while !tx.is_closed() {
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, for instance: wait, go on.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::warn!(error = %e, "cannot set TCP_NODELAY");
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
