//! HTTPS for the master (docs/master.md, "TLS"): the certificate chain and the private key from
//! PEM files, the key file readable by its owner only, rustls with the `ring` provider.
//!
//! Without TLS the master listens only on loopback, unless `--insecure-http` says otherwise
//! ([`plain_http_allowed`]).

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::rustls::ServerConfig;

/// Largest certificate or key file read (a chain of a few certificates is a few KiB).
const MAX_PEM: u64 = 1 << 20;

/// The first byte of a TLS record carrying a handshake: what a TLS client sends first.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to a plain-HTTP request on the HTTPS port (then the connection is closed).
pub const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 51\r\nConnection: close\r\n\r\nthe master speaks HTTPS on this port: use https://\n";

/// Read a PEM file of at most [`MAX_PEM`] bytes; with `private`, refuse it when its group or
/// others may read or write it (checked on the open file).
fn read_pem(path: &Path, what: &str, private: bool) -> Result<Vec<u8>, String> {
    let name = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open {what} file \"{name}\": {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat {what} file \"{name}\": {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(format!(
            "{what} file \"{name}\" has mode {mode:04o}: a private key must be readable by its owner only (chmod 600)"
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_PEM + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what} file \"{name}\": {e}"))?;
    if bytes.len() as u64 > MAX_PEM {
        return Err(format!("{what} file \"{name}\" is larger than {MAX_PEM} bytes"));
    }
    Ok(bytes)
}

/// Where the private key comes from.
pub enum Key<'a> {
    /// A PEM file, mode 0600 or stricter.
    File(&'a Path),
    /// The environment's `TLS_KEY`: a PEM, or a PKCS#8 key's base64 on one line (for an env
    /// file, which holds no line breaks).
    Env(&'a str),
}

/// The server's TLS configuration from a certificate chain file (the master's certificate
/// first) and its private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_file: &Path, key: Key<'_>) -> Result<Arc<ServerConfig>, String> {
    let pem = read_pem(cert_file, "certificate", false)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file \"{}\": {e:?}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("certificate file \"{}\": no certificate in it", cert_file.display()));
    }
    let (pem, key_name) = match key {
        Key::File(f) => (read_pem(f, "key", true)?, format!("key file \"{}\"", f.display())),
        Key::Env(v) if v.contains("-----BEGIN") => (v.as_bytes().to_vec(), "TLS_KEY".to_string()),
        Key::Env(v) => {
            let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", v.trim());
            (pem.into_bytes(), "TLS_KEY".to_string())
        }
    };
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        tokio_rustls::rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{key_name}: no private key in it")
        }
        e => format!("{key_name}: {e:?}"),
    })?;
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate file \"{}\" and {key_name}: {e}", cert_file.display()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Whether the master may serve plain HTTP on `listen`: on a loopback address, or when the
/// operator said so (`--insecure-http`).
pub fn plain_http_allowed(listen: &SocketAddr, insecure: bool) -> bool {
    listen.ip().is_loopback() || insecure
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(dir: &Path, name: &str, text: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mesh-master-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_plain_http_answer_is_whole() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{text}");
    }

    #[test]
    fn plain_http_only_on_loopback_unless_told() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(plain_http_allowed(&at("127.0.0.1:8000"), false));
        assert!(plain_http_allowed(&at("[::1]:8000"), false));
        assert!(!plain_http_allowed(&at("0.0.0.0:8000"), false));
        assert!(!plain_http_allowed(&at("10.1.2.3:8000"), false));
        assert!(plain_http_allowed(&at("0.0.0.0:8000"), true));
    }

    #[test]
    fn refusals_name_the_file_and_the_fault() {
        let d = tmp("refusals");
        let junk = file(&d, "junk.pem", b"not a certificate\n", 0o644);
        let e = server_config(&junk, Key::File(&junk)).unwrap_err();
        assert!(e.contains("no certificate in it") && e.contains("junk.pem"), "{e}");
        let missing = d.join("missing.pem");
        let e = server_config(&missing, Key::File(&missing)).unwrap_err();
        assert!(e.starts_with("cannot open certificate file") && e.contains("missing.pem"), "{e}");
        // A syntactically fine certificate block is enough to get to the key.
        let cert =
            file(&d, "cert.pem", b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n", 0o644);
        let open_key = file(&d, "open.key", b"x", 0o644);
        let e = server_config(&cert, Key::File(&open_key)).unwrap_err();
        assert!(e.contains("has mode 0644") && e.contains("chmod 600"), "{e}");
        let group_key = file(&d, "group.key", b"x", 0o640);
        assert!(server_config(&cert, Key::File(&group_key)).unwrap_err().contains("mode 0640"));
        let empty_key = file(&d, "empty.key", b"nothing here\n", 0o600);
        let e = server_config(&cert, Key::File(&empty_key)).unwrap_err();
        assert!(e.contains("no private key in it"), "{e}");
        let e = server_config(&cert, Key::Env("")).unwrap_err();
        assert!(e.contains("TLS_KEY"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A self-signed certificate and its key from the openssl CLI, in `d`; None without openssl.
    fn self_signed(d: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some((cert, key))
    }

    /// The listener over TLS: a connection that sends nothing, or the start of a handshake and
    /// no more, is closed within the header timeout; a plain-HTTP request gets the 400.
    #[tokio::test]
    async fn handshakes_are_held_to_the_header_timeout() {
        use std::time::{Duration, Instant};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let d = tmp("listener");
        let Some((cert, key)) = self_signed(&d) else {
            eprintln!("no openssl: skipped");
            return;
        };
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = server_config(&cert, Key::File(&key)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counted = Arc::new(parking_lot::Mutex::new(Vec::<&'static str>::new()));
        let c = counted.clone();
        let limits =
            crate::listener::Limits { max_connections: 16, header_timeout: Duration::from_millis(300) };
        let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        tokio::spawn(crate::listener::serve(
            listener,
            router,
            limits,
            Some(cfg),
            Arc::new(move |n| c.lock().push(n)),
            std::future::pending(),
        ));
        let t0 = Instant::now();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(&[HANDSHAKE_RECORD, 3, 1, 0, 200, 1, 0]).await.unwrap();
        let mut buf = [0u8; 64];
        for s in [&mut silent, &mut half] {
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
            assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed by the master: {n:?}");
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "within the header timeout: {:?}", t0.elapsed());
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), plain.read_to_end(&mut answer)).await.unwrap().unwrap();
        assert_eq!(answer, PLAIN_HTTP_ANSWER);
        drop(plain); // (the master drains until the client closes, then counts)
        for _ in 0..100 {
            if counted.lock().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counted = counted.lock().clone();
        assert_eq!(counted.iter().filter(|n| **n == "mesh_master_tls_handshakes_failed_total").count(), 2);
        assert_eq!(counted, [counted[0], counted[1], "mesh_master_plain_http_refused_total"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
