//! TLS to the master: the CA the node verifies the master against (`mesh_master_ca`), read and
//! checked at configuration time, never on the event loop; and what the node says of a master
//! URL that is plain HTTP to another host.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts};

/// Largest CA file read.
const MAX_CA_FILE: u64 = 1 << 20;

/// The certificates a node trusts for its master (a private CA's, usually one).
#[derive(Debug, Clone)]
pub struct MasterCa {
    certs: Arc<Vec<Certificate<'static>>>,
}

impl MasterCa {
    /// The certificates of a PEM file: at least one, each a usable trust anchor. Errors in
    /// nginx's short wording, for `nginx -t` ("no certificate in it", "cannot open ...").
    pub fn read(path: &Path) -> Result<MasterCa, String> {
        let mut f = std::fs::File::open(path).map_err(|e| crate::load::os_error("open", e))?;
        let mut pem = Vec::new();
        (&mut f).take(MAX_CA_FILE + 1).read_to_end(&mut pem).map_err(|e| crate::load::os_error("read", e))?;
        if pem.len() as u64 > MAX_CA_FILE {
            return Err(format!("larger than {MAX_CA_FILE} bytes"));
        }
        MasterCa::from_pem(&pem)
    }

    /// As [`MasterCa::read`], of the file's bytes.
    pub fn from_pem(pem: &[u8]) -> Result<MasterCa, String> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("invalid PEM: {e}")),
            }
        }
        if certs.is_empty() {
            return Err("no certificate in it".into());
        }
        for (i, c) in certs.iter().enumerate() {
            let der = rustls::pki_types::CertificateDer::from(c.der());
            rustls::RootCertStore::empty()
                .add(der)
                .map_err(|e| format!("certificate {} is not usable as a CA: {e}", i + 1))?;
        }
        Ok(MasterCa { certs: Arc::new(certs) })
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Never true (a CA file has at least one certificate).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub(crate) fn root_certs(&self) -> RootCerts {
        RootCerts::Specific(self.certs.clone())
    }
}

/// The host of an `http(s)://host[:port][/prefix]` URL, without brackets.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

/// Whether `url` is plain HTTP to a host that is not this machine's loopback (the node's key,
/// its tables and the viewer secret would cross a network in clear): `nginx -t` warns.
pub fn plain_to_remote(url: &str) -> bool {
    if !url.starts_with("http://") {
        return false;
    }
    let h = host(url);
    let loopback =
        h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// A TLS failure as the node logs it, naming the master and, when it is one, the certificate.
pub(crate) fn describe(base: &str, e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let why = match c {
                rustls::CertificateError::UnknownIssuer => "its issuer is not a CA the node trusts".into(),
                rustls::CertificateError::BadSignature => "not signed by a CA the node trusts".into(),
                c => c.to_string(),
            };
            format!("certificate of master \"{base}\" refused: {why} (check mesh_master_ca)")
        }
        e => format!("TLS with master \"{base}\" failed: {e}"),
    }
}

/// The rustls error behind a ureq error, if one is.
pub(crate) fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_to_another_host_is_told() {
        for url in
            ["http://10.0.0.1:8000", "http://master:8000", "http://example.org", "http://[2001:db8::1]:80"]
        {
            assert!(plain_to_remote(url), "{url}");
        }
        for url in [
            "http://127.0.0.1:8000",
            "http://127.9.9.9",
            "http://localhost:8000/mesh",
            "http://[::1]:8000",
            "https://master:8443",
        ] {
            assert!(!plain_to_remote(url), "{url}");
        }
    }

    #[test]
    fn a_refused_certificate_names_the_master() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(
            describe("https://m:8443", &e),
            "certificate of master \"https://m:8443\" refused: its issuer is not a CA the node trusts (check mesh_master_ca)"
        );
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(describe("https://m", &e).starts_with("certificate of master \"https://m\" refused: "));
        let e = rustls::Error::NoCertificatesPresented;
        assert!(describe("https://m", &e).starts_with("TLS with master \"https://m\" failed: "));
    }

    /// A CA and a master certificate for 127.0.0.1 from scripts/mesh-tls.sh, in a new dir.
    fn pki(tag: &str) -> Option<std::path::PathBuf> {
        let d = std::env::temp_dir().join(format!("mesh-agent-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mesh-tls.sh");
        let ok = std::process::Command::new("bash")
            .arg(script)
            .arg(&d)
            .arg("127.0.0.1")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(d)
    }

    /// One TLS connection served with `dir`'s master certificate: reads a request head, answers
    /// an unsigned 500 (enough to tell that TLS held: the client then says "status 500").
    fn serve_tls(dir: &Path) -> String {
        use rustls::pki_types::pem::PemObject;
        use std::io::{BufRead, BufReader, Write};
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("master.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("master.key")).unwrap();
        let cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(cfg)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut r = BufReader::new(&mut tls);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = tls.write_all(b"HTTP/1.1 500 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
        base
    }

    fn call(base: &str, ca: Option<MasterCa>) -> crate::client::CallError {
        use crate::client::{HttpConfig, HttpMaster, Master};
        let m = HttpMaster::new(HttpConfig {
            base: base.to_string(),
            key: b"k".to_vec(),
            node_id: "edge-1".into(),
            paths: Default::default(),
            timeout: std::time::Duration::from_secs(3),
            max_body: 1024,
            ca,
        });
        let req = mesh_core::wire::RouteRequest { node_id: "edge-1".into(), stream: "cam1".into() };
        m.route(&req).unwrap_err()
    }

    #[test]
    fn the_master_is_verified_against_the_ca() {
        let (Some(good), Some(other)) = (pki("good"), pki("other")) else {
            eprintln!("no openssl: skipped");
            return;
        };
        let ca = MasterCa::read(&good.join("ca.pem")).unwrap();
        let base = serve_tls(&good);
        assert_eq!(
            call(&base, Some(ca)),
            crate::client::CallError::Status(500),
            "TLS held with the right CA"
        );
        for ca in [Some(MasterCa::read(&other.join("ca.pem")).unwrap()), None] {
            let base = serve_tls(&good);
            let e = call(&base, ca).to_string();
            assert!(e.starts_with(&format!("certificate of master \"{base}\" refused: ")), "{e}");
        }
        let _ = (std::fs::remove_dir_all(good), std::fs::remove_dir_all(other));
    }

    #[test]
    fn a_ca_file_needs_a_certificate() {
        assert_eq!(MasterCa::from_pem(b"").unwrap_err(), "no certificate in it");
        assert_eq!(MasterCa::from_pem(b"hello\n").unwrap_err(), "no certificate in it");
        let key_only = b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
        assert_eq!(MasterCa::from_pem(key_only).unwrap_err(), "no certificate in it");
        let junk = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let e = MasterCa::from_pem(junk).unwrap_err();
        assert!(e.starts_with("certificate 1 is not usable as a CA"), "{e}");
        let e = MasterCa::read(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("open"), "{e}");
    }
}
